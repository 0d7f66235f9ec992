"""The weight average (tfharm/weight_average.py): its update rule and the exact swap back."""
import numpy as np
import pytest
import tensorflow as tf

from tfharm.weight_average import WeightAverage


def test_weight_average_update_and_swap():
  v = tf.Variable([0.0, 4.0])
  avg = WeightAverage([v], decay=0.75)
  avg.reset()
  v.assign([4.0, 0.0])
  avg.update()
  np.testing.assert_allclose(avg.averages[0].numpy(), [1.0, 3.0])
  with avg.swapped_in():
    np.testing.assert_allclose(v.numpy(), [1.0, 3.0])
  np.testing.assert_array_equal(v.numpy(), [4.0, 0.0])  # the trained weights come back exactly
  with pytest.raises(ValueError, match="decay"):
    WeightAverage([v], decay=1.0)

"""Evaluation of the systems (tfharm.systems), all or those named: the paper's detector +
harmoniser pipeline (Table 1, Figs. 4-5) and the joint model.

`evaluate(EvalConfig(...))` is the library entry point; `python -m tfharm.eval` the command.
`quick_scores` holds one network's means without LPIPS, tables or figures (what checkpoints are
chosen on; `python -m tfharm.validation`).
"""

from tfharm.evaluation.config import EvalConfig, EvaluationError
from tfharm.evaluation.evaluator import evaluate
from tfharm.evaluation.graph import EvalGraph
from tfharm.evaluation.methods import DETECTOR_METRICS, IMAGE_METRICS, METHODS

__all__ = ["DETECTOR_METRICS", "IMAGE_METRICS", "METHODS", "EvalConfig", "EvalGraph",
           "EvaluationError", "evaluate"]

"""tfharm: mask-free image harmonisation in TensorFlow/Keras."""
import setuptools

setuptools.setup(
    name="tfharm",
    version="0.1.0",
    description="Mask-free image harmonisation: perceptual luminance detector + DIH harmoniser.",
    python_requires=">=3.11,<3.12",
    # tfharm only: the dataset's builder is tfharm.data.luminance_composites; data_builders/ is
    # the repository's registration of it for `tfds build`, not a package to install.
    packages=setuptools.find_packages(include=["tfharm", "tfharm.*"]),
    package_data={"tfharm.data": ["luminance_composites_metadata/*"],
                  "tfharm.app": ["examples/*.png"],
                  # The shipped weights (tfharm.presets; sizes: ls -l tfharm/presets): a plain `pip install .`
                  # has them. Their README and the run records (experiments/) are not installed.
                  "tfharm.presets": ["*.weights.h5", "*.json"]},
    install_requires=[
        "tensorflow==2.21.*",
        "tensorflow-datasets==4.9.*",
        "numpy>=1.26",
        "opencv-python-headless>=4.9",
        "pycocotools>=2.0.7",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "pillow>=10",
        "tensorboard==2.21.*",  # tf.summary needs it; TF 2.21 no longer depends on it
        "importlib_resources",  # tensorflow-datasets 4.9.10 imports it without declaring it
    ],
    extras_require={
        # pytest-xdist: `make test` runs on two workers. dill: tfds.testing.
        # tensorflow-serving-api: the PredictRequest protos of the export tests (2.21.0 pins
        # tensorflow>=2.21,<3 and installs with its dependencies).
        # selenium: the web page's browser test (with Debian's chromium, `make browser`).
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "scikit-image>=0.22", "dill",
                "tensorflow-serving-api==2.21.*", "selenium==4.51.0"],
        # The web page, `python -m tfharm.app` (docs/app.md). Pinned: the page relies on
        # Gradio's DOM (element ids, toasts) in its browser test.
        "app": ["gradio==6.31.0"],
        # The `tfds` command line imports both; the Python entry point does not need them.
        "beam": ["apache-beam>=2.60", "mlcroissant>=1.0"],
    },
)

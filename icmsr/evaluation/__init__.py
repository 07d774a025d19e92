"""Evaluation: pyiqa-backed metrics, offline weights, FID, reports, folder scoring."""
from .iqa_metric import IQAMetrics  # noqa: F401
from .scorers import DEFAULT_METRICS, METRIC_INFO, build_scorers  # noqa: F401
from .weights import ENV_VAR, MetricWeightsError  # noqa: F401

"""A local RabbitMQ cluster for tests, demos and benchmarks (`python -m tools.cluster`)."""

from tools.cluster.launcher import Cluster
from tools.cluster.nodes import ClusterError, Credentials

__all__ = ["Cluster", "ClusterError", "Credentials"]

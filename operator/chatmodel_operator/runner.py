"""`chatmodel operator`: run the kopf operator with the current KUBECONFIG or in-cluster
credentials."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import kopf
import yaml
from kubernetes_asyncio.config import ConfigException

from chatmodel_operator import metrics
from chatmodel_operator.adapters import kube
from chatmodel_operator.cli_args import PORT_OR_OFF, CliError, bounded
from chatmodel_operator.handlers import OperatorConfig, build_registry
from chatmodel_operator.reconcile import Settings


def register_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "operator", help="run the operator (kopf) against the current cluster"
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable; globs such as 'team-*' allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    p.add_argument(
        "--metrics-port", type=PORT_OR_OFF, default=8080, help="Prometheus /metrics port (0: off)"
    )
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        help="address the /metrics server binds (127.0.0.1 outside a pod)",
    )
    p.add_argument(
        "--resync-seconds",
        type=bounded(float, 1),
        default=300.0,
        help="re-check every ChatModel this often",
    )
    p.add_argument(
        "--status-settle-seconds",
        type=bounded(float, 0),
        default=Settings.status_settle_s,
        help="how long an in-between phase (BuildingEngine, Deploying, ...) may wait to be "
        "written, so that quick steps cost one status write and one Event (0: write each)",
    )
    p.add_argument(
        "--liveness", metavar="URL", help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_operator)


def credentials_problem() -> str | None:
    """Why neither in-cluster credentials nor a kubeconfig can be loaded (the loader the
    operator and its kopf watches log in with), or None. Without this check kopf retries its
    login forever, a traceback each time."""
    try:
        asyncio.run(kube.load_credentials())
        return None
    except (ConfigException, OSError, yaml.YAMLError) as exc:
        return str(exc).strip() or type(exc).__name__


def cmd_operator(args: argparse.Namespace) -> int:
    problem = credentials_problem()
    if problem is not None:
        raise CliError(
            f"no Kubernetes credentials (not in a pod, and no kubeconfig: {problem}); fix: run "
            "it in the cluster with a ServiceAccount (the chart does) or set KUBECONFIG"
        )
    # kopf's configure sets up the root logger (one handler); ours propagate to it.
    kopf.configure(verbose=args.log_level == "DEBUG", log_format=kopf.LogFormat.PLAIN)
    logging.getLogger().setLevel(args.log_level)
    quiet_kopf(args.log_level)
    if args.metrics_port:
        metrics.start_metrics_server(args.metrics_port, args.metrics_address)
    namespaces = list(args.namespaces or [])
    config = OperatorConfig(
        resync_seconds=args.resync_seconds,
        clusterwide=not namespaces,
        settings=Settings(status_settle_s=args.status_settle_seconds),
    )
    asyncio.run(
        kopf.operator(
            registry=build_registry(config),
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


def quiet_kopf(level: str) -> None:
    """kopf logs every handler call at INFO ("Handler ... succeeded"), several per ChatModel
    change; the reconcile logs what matters. kopf's warnings and errors still show."""
    if level != "DEBUG":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

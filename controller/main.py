"""enforcement-controller: the OpenFlow controller and the gRPC API in one
process.

OS-Ken runs on its native-thread hub, so grpcio shares the process without any
monkey-patching. OS-Ken's threads cannot be killed (hub.kill does nothing with
native threads), so they are started from a daemon thread, which makes every
thread they spawn a daemon too, and the process can exit once the gRPC server
has drained.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from controller.process import config, logs
from controller.process.notify import notify
from controller.process.sighup import OnHangup
from controller.process.stopping import StopSignals

if TYPE_CHECKING:
    from os_ken.base.app_manager import AppManager

    from controller.osken.app import EnforcementApp, Setup
    from controller.process.ha import Failover
    from enforcement.api.access import Access
    from enforcement.api.servicer import Serving
    from enforcement.cluster.leaderproxy import Forwarder
    from enforcement.cluster.leadership import Leadership
    from enforcement.domain.policy import Policy
    from enforcement.lifecycle.maintenance import Maintenance
    from enforcement.lifecycle.service import EnforcementService
    from enforcement.store.database import Store

LOG = logging.getLogger("enforcement-controller")

APPS = ["controller.topology.lldp.discovery", "controller.osken.app"]


def _check_port_free(host: str, port: int) -> None:
    """OS-Ken binds the OpenFlow port in a thread of its own and only logs a
    failure, so check first and fail the start with a clear message."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"OpenFlow port {host}:{port} is not free ({exc.strerror}); "
                          "is another controller running?") from None


def _keep_event_loops_alive() -> None:
    """On OS-Ken's native-thread hub, hub.TaskExit is Exception itself, so
    an app's event loop treats any exception a handler raises as the order
    to stop (`except hub.TaskExit: raise`), and the thread running it
    swallows it: the app goes deaf without a word, its queue fills, and
    every switch's reader blocks behind it. A class of its own makes
    TaskExit mean only TaskExit again (nothing raises it on this hub), so a
    failing handler is logged and the loop goes on."""
    from os_ken.lib import hub
    if hub.TaskExit is Exception:
        class TaskExit(Exception):
            pass
        hub.TaskExit = TaskExit


def _start_os_ken(args: argparse.Namespace, setup: Setup,
                  lldp_key: bytes) -> tuple[AppManager, EnforcementApp]:
    # app_manager must be imported before the configuration is parsed, and
    # the modules that register the options used below.
    import os_ken.controller.controller  # registers the --ofp-* options
    import os_ken.topology.switches  # noqa: F401
    from os_ken import cfg
    from os_ken.base import app_manager

    _keep_event_loops_alive()
    cfg.CONF(args=[
        "--ofp-listen-host", args.ofp_listen_host,
        "--ofp-tcp-listen-port", str(args.ofp_port),
        "--observe-links",
    ], project="os_ken")
    # Notice a dead switch within about three seconds (off by default).
    cfg.CONF.set_override("echo_request_interval", 1.0)
    cfg.CONF.set_override("maximum_unreplied_echo_requests", 3)
    manager = app_manager.AppManager.get_instance()
    manager.load_apps(APPS)
    contexts = manager.create_contexts()
    booted = threading.Event()
    failure: list[BaseException] = []

    def boot():
        # OS-Ken builds the apps itself and hands every one of them the same
        # keywords (as it does its _CONTEXTS): each takes its own.
        try:
            manager.instantiate_apps(**contexts, setup=setup, lldp_key=lldp_key,
                                     lldp_cadence=args.lldp_cadence)
        except BaseException as exc:  # reported to the main thread below
            failure.append(exc)
        booted.set()

    threading.Thread(target=boot, name="os-ken", daemon=True).start()
    if not booted.wait(30) or failure:
        raise RuntimeError(f"OS-Ken did not start: {failure or 'timeout'}")
    return manager, app_manager.lookup_service_brick("EnforcementApp")


def _start_view(args, service, app, access: Callable[[], Access]) -> str:
    """Starts the topology view; returns ' http=HOST:PORT' for the READY line."""
    if args.http_listen == "off":
        return ""
    from controller.view.server import TopologyWeb, ViewModel
    token = None
    if args.http_token_file:
        with open(args.http_token_file) as token_file:
            token = token_file.read().strip()
        if len(token) < 16:
            raise ValueError(f"the token in {args.http_token_file} is shorter than 16 "
                             "characters")
    context = may_read = None
    host, _, port = args.http_listen.rpartition(":")
    # With TLS configured the view asks for a client certificate on loopback
    # too: a deployment that guards its API does not leave every
    # subscriber's case readable to whoever has a shell (or a tunnel) here.
    if args.tls:
        from enforcement.api.tlsgate import server_context
        context = server_context(args.tls_cert, args.tls_key, args.tls_client_ca,
                                 alpn=("http/1.1",))
        # Whoever may read the topology over gRPC may read the view.
        # (as the access file in force says: a reload changes it).
        may_read = lambda name: access().refusal(name, "GetTopology") is None  # noqa: E731
    names = [name.strip() for name in (args.http_names or "").split(",") if name.strip()]
    view = TopologyWeb(ViewModel(service, app), host.strip("[]"), int(port),
                       token=token, ssl_context=context, may_read=may_read, names=names)
    bound = view.start()
    LOG.info("topology view on %s://%s:%d/", "https" if context else "http", host, bound)
    return f" http={host}:{bound}"


def _reload_on_hangup(hangup, args, service, app, serving, in_force, files) -> None:
    from controller.process.reload import Loaded, Reloader, Sources

    def set_access(access: Access) -> None:
        in_force[0] = access
        if serving.guard is not None:
            serving.guard.replace_access(access)
    policy, access, pinned = files
    reloader = Reloader(Sources(args.policy, args.access, args.inventory),
                        Loaded(policy, access, tuple(pinned)), service,
                        set_access=set_access, set_inventory=app.repin)
    OnHangup(reloader, hangup).start()


class _QuietUndecodable(logging.Filter):
    """grpcio logs an ERROR with a traceback for every request body that is
    not the method's protobuf message (and answers it INTERNAL): a client
    sending garbage must not fill the log with tracebacks. One line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "deserializ" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "refused an undecodable request (not protobuf)", ()
            record.exc_info = record.exc_text = None
        return True


# How long a thread may hold the GIL while another waits for it. A decision
# passes through a gRPC worker, the batch leader and OS-Ken's receive thread,
# each waking from I/O (a barrier reply, a commit) and then waiting for
# whichever thread is computing: at CPython's default of 5 ms that wait is
# the tail of every call. Measured by bench/latency.py.
SWITCH_INTERVAL_SECONDS = float(os.environ.get("ENFORCEMENT_SWITCH_INTERVAL", "0.0005"))


class _CannotStart(Exception):
    """The start cannot go on; why was logged (the process exits with 2)."""


def _refuse(message: str, *args) -> _CannotStart:
    LOG.error(message, *args)
    return _CannotStart()


@dataclasses.dataclass
class _Running:
    """What the stop takes down, in its order (_stop)."""
    stop: StopSignals
    serving: Serving
    maintenance: Maintenance
    service: EnforcementService
    leadership: Leadership
    forwarder: Forwarder
    store: Store
    manager: AppManager


def main(argv: list[str] | None = None) -> int:
    args = config.parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    if args.check_config:
        from controller.process import checkconfig
        return checkconfig.run(args)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    logging.getLogger("grpc._common").addFilter(_QuietUndecodable())
    if args.config:
        LOG.info("configuration file %s", args.config)
    try:
        running = _build(args)
    except _CannotStart:
        return 2
    # The main thread's one wait: everything after it is the stop.
    _stop(running, running.stop.wait())
    return 0


def _load_files(args: argparse.Namespace):
    """The policy, access and inventory files, and the TLS context."""
    from enforcement.api import access as access_file
    from enforcement.domain import inventory as inventory_file
    from enforcement.domain import policy as policy_file
    try:
        policy = policy_file.load(args.policy)
        access = access_file.load(args.access)
        pinned = inventory_file.load(args.inventory)
    except (policy_file.PolicyError, access_file.AccessError,
            inventory_file.InventoryError) as exc:
        raise _refuse("%s", exc) from None
    tls_context = None
    if args.tls:
        try:
            from enforcement.api.tlsgate import server_context
            tls_context = server_context(args.tls_cert, args.tls_key, args.tls_client_ca)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise _refuse("cannot use the TLS files (%s, %s, %s): %s", args.tls_cert,
                          args.tls_key, args.tls_client_ca, exc) from None
        if not access.clients:
            LOG.warning("TLS is on but the access file gives no client a role: "
                        "every call will be refused (see --access)")
    else:
        LOG.warning("gRPC without TLS on %s: every local process may apply and lift; "
                    "configure --tls-cert/--tls-key/--tls-client-ca for anything else",
                    args.grpc_listen)
    return policy, access, pinned, tls_context


def _open_store(args: argparse.Namespace) -> Store:
    from enforcement.store.database import Store
    try:
        _check_port_free(args.ofp_listen_host, args.ofp_port)
    except OSError as exc:
        raise _refuse("%s", exc) from None
    try:
        os.makedirs(args.state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _refuse("cannot create the state directory %s: %s (see --state-dir)",
                      args.state_dir, exc) from None
    LOG.info("state directory %s", args.state_dir)
    notify("STATUS=opening the store")
    try:
        return Store(args.db)
    except Exception as exc:  # a bad URL, an unreadable file, a failed migration
        raise _refuse("cannot open the store %s: %s", config.printable_url(args.db),
                      exc) from None


def _connect(args: argparse.Namespace, app: EnforcementApp, store: Store, policy: Policy
             ) -> tuple[EnforcementService, Leadership, Failover]:
    """The service and the leadership, built once OS-Ken runs the app (the
    service's network), and connected to it and to each other."""
    from controller.process import ha
    from enforcement.cluster.leadership import Leadership
    from enforcement.lifecycle.service import EnforcementService
    solo = store.url.startswith("sqlite")
    leadership = Leadership(store, ha.instance_name(args.instance_name), "",
                            lease=args.lease_seconds, solo=solo)
    service = EnforcementService(app, policy, store, switch_timeout=args.switch_timeout,
                                 leadership=leadership)
    # Switches that connected while the store was loading are claimed and
    # reconciled when this instance is elected.
    failover = ha.Failover(app, service, leadership)
    app.connect(service, failover.epochs())
    # Switches that connected before this claimed with no epoch.
    app.follow()
    return service, leadership, failover


def _build(args: argparse.Namespace) -> _Running:
    from enforcement.api.servicer import serve
    from enforcement.lifecycle.maintenance import Maintenance
    from enforcement.lifecycle.proving import Proofs
    policy, access, pinned, tls_context = _load_files(args)

    stop = StopSignals()
    # SIGHUP reloads the files (controller/process/sighup.py). Caught from here
    # on, since by default it would end the process: one that arrives
    # during the start is done once everything runs.
    hangup = threading.Event()
    OnHangup.install_handler(hangup)
    in_force = [access]  # the access rules now, for the view (a reload swaps them)

    store = _open_store(args)
    from controller.topology.lldp import key as lldpkey
    try:
        lldp_key, key_source = lldpkey.load(args.lldp_key_file, store)
    except (OSError, ValueError) as exc:
        raise _refuse("no LLDP key (see --lldp-key-file): %s", exc) from None
    LOG.info("LLDP probes authenticated with the key from %s", key_source)
    from controller.osken.app import Settings, Setup
    setup = Setup(pinned, Settings(args.budgets, args.packet_in_queue, args.startup_grace,
                                   dhcp_trusted=args.dhcp_trusted_ports,
                                   switch_timeout=args.switch_timeout,
                                   gateway=args.gateway_dpid, isolated=args.isolated))
    if args.gateway_dpid is not None:
        LOG.info("forwarding hangs from the gateway switch %016x; subscriber isolation %s",
                 args.gateway_dpid, "on" if args.isolated else "off")
    if pinned:
        LOG.info("inventory: %d subscriber(s) pinned", len(pinned))
    notify("STATUS=starting OpenFlow")
    manager, app = _start_os_ken(args, setup, lldp_key)
    service, leadership, failover = _connect(args, app, store, policy)
    from controller.process import ha
    from enforcement.cluster.leaderproxy import Forwarder, peer_secret
    from enforcement.lifecycle.metrics import Metrics
    metrics = Metrics(service, app)
    metrics_address = ""
    if args.metrics_listen != "off":
        host, _, port = args.metrics_listen.rpartition(":")
        # Off loopback only with mutual TLS (config.check insists): the
        # scraper presents a client certificate of the deployment's CA.
        tls = (None if config.is_loopback(host)
               else (args.tls_cert, args.tls_key, args.tls_client_ca))
        try:
            _, bound = metrics.serve(host.strip("[]"), int(port), tls=tls)
        except OSError as exc:
            raise _refuse("cannot serve metrics on %s: %s", args.metrics_listen,
                          exc) from None
        metrics_address = f" metrics={host}:{bound}"
    try:
        http_address = _start_view(args, service, app, lambda: in_force[0])
    except (OSError, ValueError) as exc:
        raise _refuse("cannot serve the topology view on %s: %s", args.http_listen,
                      exc) from None
    solo = leadership.solo
    try:
        peer_key = peer_secret(store)
        forwarder = Forwarder(leadership, service.leading, key=peer_key,
                              credentials=ha.peer_credentials(args))
        serving = serve(args.grpc_listen, service, access=access, metrics=metrics,
                        tls_context=tls_context, forwarder=None if solo else forwarder,
                        peer_key=None if solo else peer_key)
    except (OSError, RuntimeError, ValueError) as exc:
        raise _refuse("cannot serve gRPC on %s: %s", args.grpc_listen, exc) from None
    maintenance = Maintenance(service, audit_interval=args.audit_interval)
    maintenance.start()
    if args.proofs_per_second > 0:
        service.proofs = Proofs(service, app, per_second=args.proofs_per_second,
                                on_proof=metrics.observe_proof)
        app.ready_listeners.append(service.proofs.switch_back)
        service.proofs.start()
    _reload_on_hangup(hangup, args, service, app, serving, in_force, (policy, access, pinned))
    host, port = args.grpc_listen.rsplit(":", 1)[0], serving.port
    leadership.address = args.advertise or f"{host}:{port}"
    try:
        leadership.start(failover.transitions())
    except Exception as exc:  # the store went away since it opened
        raise _refuse("cannot take part in leadership on %s: %s",
                      config.printable_url(args.db), exc) from None
    if solo and not ha.wait_until_leading(service, 30):
        LOG.error("did not take the lead on %s within 30 s", config.printable_url(args.db))
    LOG.info("instance %s, %s", leadership.holder,
             "alone on its store" if solo else
             f"sharing {store.url.split('@')[-1]} (lease {args.lease_seconds:.1f} s)")
    # Everything loaded (the store's records above all) is long-lived: full
    # collections stop walking it (controller/process/heap.py).
    from controller.process import heap
    heap.keep_full_collections_short()
    # One line on stdout that tools and tests wait for, and the same news
    # for systemd (Type=notify): gRPC is serving from here on.
    print(f"READY grpc={host}:{port} openflow={args.ofp_listen_host}:{args.ofp_port}"
          f"{metrics_address}{http_address}", flush=True)
    notify(f"READY=1\nSTATUS=serving gRPC on {host}:{port}, "
           f"OpenFlow on {args.ofp_listen_host}:{args.ofp_port}")
    LOG.info("gRPC on %s:%d, OpenFlow 1.3 on %s:%d", host, port,
             args.ofp_listen_host, args.ofp_port)
    return _Running(stop, serving, maintenance, service, leadership, forwarder, store,
                    manager)


def _stop(running: _Running, signum: int) -> None:
    notify("STOPPING=1\nSTATUS=shutting down")
    LOG.info("shutting down (%s)", signal.Signals(signum).name)
    running.serving.stop(grace=2)
    running.maintenance.stop()
    if running.service.proofs is not None:
        running.service.proofs.stop()
    # While this instance still leads: the refusals it held back are stored.
    running.service.identity_reports.stop()
    running.leadership.stop()
    running.forwarder.close()
    running.store.close()
    closer = threading.Thread(target=running.manager.close, daemon=True)
    closer.start()
    closer.join(3)
    LOG.info("stopped")


if __name__ == "__main__":
    sys.exit(main())

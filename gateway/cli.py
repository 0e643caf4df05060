"""The `gateway` command. Exit codes: 0 ok; 2 bad config or bad input (named); 1 anything else."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.errors import ConfigError, GatewayError, InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one subcommand."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"config error: {exc.key}: {exc.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error of ours.
        sys.stderr.close()
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat table of subcommands
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Returns-dock edge gateway: RFID and scans to the WMS over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"dock-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, type=Path, help="TOML configuration file")
    run.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(handler=_cmd_run)

    demo = sub.add_parser("demo", help="the whole gateway on this machine, nothing to configure")
    demo.add_argument("--mqtt-host", default=None, help="use this broker instead of finding one")
    demo.add_argument("--mqtt-port", type=int, default=None)
    demo.add_argument(
        "--state-dir", type=Path, default=None, help="keep state here (default: temp)"
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument("--chaos", action="store_true", help="stop the broker and drop the reader")
    demo.add_argument("--plain", action="store_true", help="print lines instead of a live view")
    demo.set_defaults(handler=_cmd_demo)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_cmd_check_config)

    buffer = sub.add_parser("buffer", help="inspect the SQLite buffer")
    buffer_sub = buffer.add_subparsers(dest="buffer_command", required=True)
    stats = buffer_sub.add_parser("stats", help="depth, oldest unacked age, bytes")
    stats.add_argument("--config", required=True, type=Path)
    stats.set_defaults(handler=_cmd_buffer_stats)
    export = buffer_sub.add_parser("export", help="movements (JSONL) or, with --raw, raw events")
    export.add_argument("--config", required=True, type=Path)
    export.add_argument("--raw", action="store_true", help="raw events in the replay format")
    export.add_argument(
        "--from", dest="from_pos", type=int, default=0, help="first seq / journal id"
    )
    export.set_defaults(handler=_cmd_buffer_export)

    decode = sub.add_parser("decode", help="decode identifiers (JSON lines out)")
    decode_sub = decode.add_subparsers(dest="decode_command", required=True)
    epc = decode_sub.add_parser("epc", help="EPC hex (TDS 1.13); '-' reads stdin")
    epc.add_argument("inputs", nargs="+")
    epc.set_defaults(handler=_cmd_decode_epc)
    barcode = decode_sub.add_parser("barcode", help="barcode data; '-' reads stdin (\\x1d = GS)")
    barcode.add_argument("inputs", nargs="+")
    barcode.set_defaults(handler=_cmd_decode_barcode)

    simulate = sub.add_parser("simulate", help="simulators")
    simulate_sub = simulate.add_subparsers(dest="simulate_command", required=True)
    sim_reader = simulate_sub.add_parser("reader", help="an LLRP reader simulator")
    sim_reader.add_argument("--port", type=int, default=5084)
    sim_reader.add_argument("--host", default="127.0.0.1")
    sim_reader.add_argument("--scenario", type=Path, default=None)
    sim_reader.add_argument("--speed", type=float, default=1.0, help="scenario time factor")
    sim_reader.add_argument(
        "--gpi-stdin",
        action="store_true",
        help="set GPIs from stdin lines: `1 high` breaks the beam on GPI 1, `1 low` clears it",
    )
    sim_reader.set_defaults(handler=_cmd_simulate_reader)

    profiles = sub.add_parser("profiles", help="reader profiles for technicians")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", required=True)
    validate = profiles_sub.add_parser("validate", help="check profiles; exit 2 on any error")
    validate.add_argument("paths", nargs="*", type=Path, help="files or folders (default: all)")
    validate.set_defaults(handler=_cmd_profiles_validate)
    diff = profiles_sub.add_parser("diff", help="field-by-field difference of two profiles")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(handler=_cmd_profiles_diff)
    apply = profiles_sub.add_parser("apply", help="apply a profile to a reader of a running daemon")
    apply.add_argument("--config", required=True, type=Path)
    apply.add_argument("--reader", required=True)
    apply.add_argument("--by", default=None, help="who asks (default: $USER)")
    apply.add_argument("name", help="profile name or path to a profile file")
    apply.set_defaults(handler=_cmd_profiles_apply)
    history = profiles_sub.add_parser("history", help="every profile change, newest last")
    history.add_argument("--config", required=True, type=Path)
    history.add_argument("--reader", default=None)
    history.set_defaults(handler=_cmd_profiles_history)

    schema = sub.add_parser("print-schema", help="JSON Schema of profile files (for editors)")
    schema.add_argument("what", nargs="?", choices=["profile", "config"], default="profile")
    schema.set_defaults(handler=_cmd_print_schema)

    sink = sub.add_parser("wms-sink", help="the reference WMS consumer (stores, dedupes, acks)")
    sink.add_argument("--mqtt-host", default="127.0.0.1")
    sink.add_argument("--mqtt-port", type=int, default=1883)
    sink.add_argument("--db", required=True, type=Path, help="SQLite file for stored movements")
    sink.add_argument(
        "--servers",
        nargs="+",
        default=None,
        metavar="HOST:PORT",
        help="the nodes of a broker cluster, tried in turn (instead of --mqtt-host/--mqtt-port)",
    )
    sink.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="MQTT version")
    sink.add_argument("--prefix", default="returns")
    sink.add_argument(
        "--group",
        default=None,
        help="shared-subscription group (default `wms` with MQTT 5, none with 3.1.1)",
    )
    sink.add_argument("--username", default=None)
    sink.add_argument("--password-env", default=None, help="environment variable with the password")
    sink.add_argument("--no-ack", action="store_true", help="store but never acknowledge")
    sink.add_argument(
        "--gap-timeout-s",
        type=float,
        default=120.0,
        help="release a seq gap after S seconds (longer than the gateway's ack_timeout_s)",
    )
    sink.add_argument(
        "--unordered",
        action="store_true",
        help="store in arrival order (only for a group whose consumers have a store each)",
    )
    sink.add_argument("--announce", type=Path, default=None, help="CSV of expected returns to send")
    sink.add_argument("--site", default=None, help="with --announce: the gateway's site")
    sink.add_argument("--gateway", default=None, help="with --announce: the gateway's id")
    sink.add_argument("--command-key-env", default=None, help="sign announcements with this key")
    sink.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    sink.set_defaults(handler=_cmd_wms_sink)

    expected = sub.add_parser("expected", help="expected returns stored in the buffer")
    expected_sub = expected.add_subparsers(dest="expected_command", required=True)
    expected_import = expected_sub.add_parser(
        "import", help="announce the RMAs of a CSV (works beside a running daemon)"
    )
    expected_import.add_argument(
        "file", type=Path, help="CSV: rma,customer,epc,gtin,serial,qty,expires_at"
    )
    expected_import.add_argument("--config", required=True, type=Path)
    expected_import.add_argument(
        "--replace", action="store_true", help="the CSV is the whole set: drop RMAs not in it"
    )
    expected_import.set_defaults(handler=_cmd_expected_import)
    expected_stats = expected_sub.add_parser("stats", help="open RMAs, open lines, expired, bytes")
    expected_stats.add_argument("--config", required=True, type=Path)
    expected_stats.set_defaults(handler=_cmd_expected_stats)

    status = sub.add_parser("status", help="buffer and reader state for a person")
    status.add_argument("--config", required=True, type=Path)
    status.set_defaults(handler=_cmd_status)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config  # noqa: PLC0415
    from gateway.daemon import Daemon  # noqa: PLC0415 - keep `decode` and `check-config` light
    from gateway.logs import configure_logging  # noqa: PLC0415
    from gateway.runtime.malloc import limit_malloc_arenas  # noqa: PLC0415

    config = load_config(args.config)
    configure_logging(args.log_format, args.log_level)
    limit_malloc_arenas()  # before the loop starts any thread
    return asyncio.run(Daemon(config).run())


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo  # noqa: PLC0415

    return run_demo(
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        state_dir=args.state_dir,
        duration_s=args.duration,
        chaos=args.chaos,
        plain=args.plain,
    )


def _cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import load_config  # noqa: PLC0415

    config = load_config(args.file)
    print(
        f"ok: gateway {config.gateway.id} at {config.gateway.site}, "
        f"{len(config.stations)} stations, {len(config.readers)} readers"
    )
    return EXIT_OK


def _cmd_buffer_stats(args: argparse.Namespace) -> int:
    from gateway.config import load_config  # noqa: PLC0415
    from gateway.operations import buffer_stats  # noqa: PLC0415

    print(json.dumps(buffer_stats(load_config(args.config)), indent=2, default=str))
    return EXIT_OK


def _cmd_buffer_export(args: argparse.Namespace) -> int:
    from gateway.config import load_config  # noqa: PLC0415
    from gateway.domain.wire import raw_event_dict  # noqa: PLC0415
    from gateway.operations import read_only_buffer  # noqa: PLC0415

    config = load_config(args.config)

    async def export() -> None:
        out = sys.stdout
        async with read_only_buffer(config) as buffer:
            if args.raw:
                async for _, event in buffer.export_raw(args.from_pos):
                    out.write(json.dumps(raw_event_dict(event), separators=(",", ":")) + "\n")
            else:
                async for row in buffer.export_movements(args.from_pos):
                    out.write(row.payload.decode() + "\n")

    asyncio.run(export())
    return EXIT_OK


def _cmd_decode_epc(args: argparse.Namespace) -> int:
    from gateway.domain.epc import describe_epc  # noqa: PLC0415

    return _decode_lines(_inputs(args.inputs, gs=False), describe_epc)


def _cmd_decode_barcode(args: argparse.Namespace) -> int:
    from gateway.domain.barcodes import describe_barcode  # noqa: PLC0415
    from gateway.gs1 import BIIP_GS1  # noqa: PLC0415

    return _decode_lines(
        _inputs(args.inputs, gs=True), lambda text: describe_barcode(text, gs1=BIIP_GS1)
    )


def _cmd_simulate_reader(args: argparse.Namespace) -> int:
    from gateway.readers.simulate_cli import run_simulator  # noqa: PLC0415

    return run_simulator(
        args.port, args.scenario, host=args.host, speed=args.speed, gpi_stdin=args.gpi_stdin
    )


def _profile_arg(text: str) -> Any:
    from gateway.profiles import resolve_profile  # noqa: PLC0415

    return resolve_profile(text)


def _cmd_profiles_validate(args: argparse.Namespace) -> int:
    from gateway.profiles import DEFAULT_PROFILE_DIR, validate_paths  # noqa: PLC0415

    paths = args.paths or [DEFAULT_PROFILE_DIR]
    errors = validate_paths(paths)
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        return EXIT_BAD_INPUT
    print(f"ok: every profile in {', '.join(str(p) for p in paths)} is valid")
    return EXIT_OK


def _cmd_profiles_diff(args: argparse.Namespace) -> int:
    from gateway.profiles import diff_profiles  # noqa: PLC0415

    for key, old, new in diff_profiles(_profile_arg(args.old), _profile_arg(args.new)):
        print(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    return EXIT_OK


def _cmd_profiles_apply(args: argparse.Namespace) -> int:
    from gateway.operations import apply_profile_cli  # noqa: PLC0415

    return apply_profile_cli(args.config, args.reader, args.name, requested_by=args.by)


def _cmd_profiles_history(args: argparse.Namespace) -> int:
    from gateway.operations import profile_history_cli  # noqa: PLC0415

    return profile_history_cli(args.config, args.reader)


def _cmd_print_schema(args: argparse.Namespace) -> int:
    if args.what == "config":
        from gateway.config import Config  # noqa: PLC0415

        schema = Config.model_json_schema()
    else:
        from gateway.profiles import profile_schema  # noqa: PLC0415

        schema = profile_schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def _cmd_wms_sink(args: argparse.Namespace) -> int:
    import os  # noqa: PLC0415

    from gateway.logs import configure_logging  # noqa: PLC0415
    from gateway.wms_sink import WmsSink, load_announcements  # noqa: PLC0415

    if args.announce is not None and (args.site is None or args.gateway is None):
        print("error: --announce needs --site and --gateway", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        rmas = load_announcements(args.announce) if args.announce is not None else None
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from gateway.config import parse_server  # noqa: PLC0415

    try:
        entries = [e for arg in args.servers or () for e in arg.split(",") if e.strip()]
        servers = [parse_server(entry) for entry in entries]
    except ValueError as exc:
        print(f"error: --servers: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    group = args.group if args.group is not None or args.protocol == "3.1.1" else "wms"
    key = os.environ.get(args.command_key_env, "").encode() if args.command_key_env else None
    password = os.environ.get(args.password_env) if args.password_env else None
    configure_logging("auto", "INFO")

    async def run() -> None:
        sink = WmsSink(
            args.mqtt_host,
            args.mqtt_port,
            args.db,
            prefix=args.prefix,
            group=group,
            ack=not args.no_ack,
            username=args.username,
            password=password,
            protocol=args.protocol,
            servers=servers,
            ordered=not args.unordered,
            gap_timeout_s=args.gap_timeout_s,
        )
        async with sink:
            if rmas is not None:
                reply = await sink.announce(
                    args.site, args.gateway, {"action": "add", "rmas": rmas}, signed=key or None
                )
                print(json.dumps({"announce": reply}))
            started = asyncio.get_running_loop().time()
            while (
                args.duration is None or asyncio.get_running_loop().time() - started < args.duration
            ):
                await asyncio.sleep(min(5.0, args.duration or 5.0))
                stats = sink.stats
                print(
                    json.dumps(
                        {
                            "stored": await sink.count(),
                            "received": stats.received,
                            "duplicates": stats.duplicates,
                            "parked": await sink.parked_count(),
                            "gaps_released": stats.gaps_released,
                            "late": stats.late,
                            "bad": stats.bad,
                            "acks_sent": stats.acks_sent,
                        }
                    ),
                    flush=True,
                )

    asyncio.run(run())
    return EXIT_OK


def _cmd_expected_import(args: argparse.Namespace) -> int:
    from gateway.expected_cli import import_cli  # noqa: PLC0415

    try:
        return import_cli(args.file, args.config, replace=args.replace)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _cmd_expected_stats(args: argparse.Namespace) -> int:
    from gateway.expected_cli import stats_cli  # noqa: PLC0415

    return stats_cli(args.config)


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.operations import status_cli  # noqa: PLC0415

    return status_cli(args.config)


def _inputs(values: Iterable[str], *, gs: bool) -> Iterable[str]:
    for value in values:
        if value == "-":
            for line in sys.stdin:
                text = line.rstrip("\r\n")
                if text:
                    yield text.replace("\\x1d", "\x1d") if gs else text
        else:
            yield value.replace("\\x1d", "\x1d") if gs else value


def _decode_lines(inputs: Iterable[str], describe: Callable[[str], dict[str, object]]) -> int:
    status = EXIT_OK
    for text in inputs:
        result = describe(text)
        if not result.get("valid"):
            status = EXIT_BAD_INPUT
        print(json.dumps(result, ensure_ascii=False))
    return status

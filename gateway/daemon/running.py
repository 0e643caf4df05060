"""The parts that exist only while the daemon runs, created together once the buffer is open."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.buffer.expected import ExpectedStore
from gateway.buffer.store import Buffer
from gateway.daemon.commands import CommandHandler
from gateway.daemon.expected import ExpectedLink
from gateway.daemon.feedback import DockFeedback
from gateway.daemon.flow import PipelineFlow, restore_pipeline
from gateway.daemon.kpis import KpiTracker
from gateway.daemon.profile_switch import ProfileSwitcher
from gateway.daemon.shared import Shared
from gateway.daemon.upkeep import Upkeep
from gateway.daemon.wiring import load_replay_epochs, make_renderer, pipeline_plan, scan_lane
from gateway.domain.kpi import CostFactors
from gateway.runtime.inbound import Delivery, InboundLane
from gateway.runtime.notify import SystemdNotifier
from gateway.sync.forwarder import Forwarder, IncomingMessage


@dataclass(frozen=True, slots=True)
class Running:
    """Buffer, data path, forwarder and the rest, all present for the whole of a run."""

    buffer: Buffer
    flow: PipelineFlow
    forwarder: Forwarder
    kpis: KpiTracker
    switcher: ProfileSwitcher
    commands: CommandHandler
    upkeep: Upkeep
    replay_epochs: dict[str, float]
    # MQTT scans from the broker link to the `mqtt-scanner` reader (None: none configured).
    scans: InboundLane[Delivery] | None
    # What each door shows (stack lights on reader GPOs, the feedback topic).
    feedback: DockFeedback


async def start_parts(
    shared: Shared,
    buffer: Buffer,
    *,
    health: Callable[[], dict[str, object]],
    notifier: SystemdNotifier,
) -> Running:
    """Restore what the last run left in the buffer and build every running part on it."""
    config = shared.config
    pipeline, cursor = await restore_pipeline(buffer, pipeline_plan(config, shared.profiles))
    expected = ExpectedLink(ExpectedStore(buffer))
    replay_epochs = await load_replay_epochs(buffer, config, shared.clock)
    kpis = KpiTracker(
        CostFactors.from_config(config.kpi.factors, config.kpi.gtin_prefixes),
        {s.id: s.absent_s for s in config.stations},
        shared.clock,
    )
    await kpis.restore(buffer)

    async def on_message(message: IncomingMessage) -> None:
        # The forwarder hands commands to the handler, which replies through the forwarder:
        # `commands` is bound below, before the forwarder runs and can receive anything.
        await commands.on_message(message)

    scans = scan_lane(config)
    forwarder = Forwarder(
        buffer,
        config.mqtt.forwarder_settings(
            config.mqtt.client_id or f"dock-gateway-{config.gateway.site}-{config.gateway.id}"
        ),
        shared.topics,
        health=health,
        on_message=on_message,
        scans=scans,
        on_published=kpis.published,
    )
    for slot in shared.slots:
        slot.on_change = forwarder.refresh_status
    buffer.stall.on_change = forwarder.refresh_status

    async def publish_feedback(station: str, payload: bytes) -> None:
        await forwarder.publish_event(payload, topic=shared.topics.feedback(station))

    feedback = DockFeedback(
        config,
        DockFeedback.latches(config),
        publish=publish_feedback,
        monotonic=shared.monotonic,
        clock=shared.clock,
    )
    flow = PipelineFlow(
        shared,
        buffer,
        pipeline,
        cursor=cursor,
        journaled_id=(await buffer.stats()).journal_last_id,
        render=make_renderer(config),
        kpis=kpis,
        on_committed=forwarder.notify,
        expected=expected,
        feedback=feedback,
    )
    # A registry in a snapshot from before migration 0002 moves into the buffer (idempotent).
    await expected.import_legacy()
    switcher = ProfileSwitcher(shared, buffer, forwarder)
    commands = CommandHandler(shared, buffer, forwarder, flow, switcher)
    return Running(
        buffer=buffer,
        flow=flow,
        forwarder=forwarder,
        kpis=kpis,
        switcher=switcher,
        commands=commands,
        upkeep=Upkeep(shared, buffer, forwarder, flow, kpis, notifier),
        replay_epochs=replay_epochs,
        scans=scans,
        feedback=feedback,
    )

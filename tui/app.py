"""The dashboard: one screen over an engine's snapshots, and keys that send it commands.

Data flow, and why:

* A thread worker polls the :class:`~cachewatch.tui.source.SnapshotSource` (socket reads,
  JSON decoding) and posts one :class:`Polled` message; the next poll is armed only when
  that message has been handled, so a slow engine delays polls instead of stacking them.
* Handlers only hand immutable values to widgets; widgets draw them in ``render()``.
* Every key comes from :data:`~cachewatch.tui.commands.ACTIONS`; an action that sends an
  engine command runs it in another thread worker and reports back with
  :class:`CommandDone`, then polls at once so the screen shows the outcome.
* Quitting closes the connections and nothing else: the engine and its training go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, TypeVar, overload

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer

from cachewatch.engine.daemon.errors import CommandFailed
from cachewatch.engine.daemon.protocol import COMMANDS
from cachewatch.engine.daemon.results import (
    AlertResult,
    CommandResult,
    EvictResult,
    JobResult,
    StopResult,
    TrainingResult,
)
from cachewatch.engine.daemon.snapshot import Alert, CacheView, EngineSnapshot, JobView
from cachewatch.engine.training.runstate import TrainingInfo

from . import commands
from .screens.alert_details import AlertDetailsScreen
from .screens.confirm import ConfirmationModal
from .screens.evict import EvictDialog, EvictRequest
from .screens.help import HelpScreen
from .screens.job_result import JobResultScreen
from .screens.split import SplitDialog, SplitRequest
from .source import SnapshotSource, Update
from .widgets.alert_banner import AlertBanner, shown_alerts
from .widgets.cache_panel import CachePanel
from .widgets.eviction_log import EvictionLog
from .widgets.gpu_panel import GpuPanel
from .widgets.jobs_bar import JobsBar
from .widgets.log_panel import TrainingLog
from .widgets.title_bar import TitleBar
from .widgets.training_panel import TrainingPanel

__all__ = ["CachewatchApp", "Polled", "CommandDone"]


class Polled(Message):
    """One poll's result, from the polling thread."""

    def __init__(self, update: Update, source: SnapshotSource | None = None) -> None:
        super().__init__()
        self.update = update
        self.source = source  # which source it came from: a poll of a source left behind is dropped

    def can_replace(self, message: Message) -> bool:
        # A newer snapshot supersedes an older one still queued, unless the older one
        # carries output lines (they would be lost) or a log reset.
        return (isinstance(message, Polled) and not message.update.log_lines and not message.update.log_reset
                and not message.update.fatal)


_W = TypeVar("_W", bound=Widget)


class CommandDone(Message):
    def __init__(self, action_id: str, command: str, result: CommandResult | None, error: str | None) -> None:
        super().__init__()
        self.action_id = action_id
        self.command = command
        self.result = result
        self.error = error


class CachewatchApp(App[None]):
    CSS_PATH = Path(__file__).with_name("dashboard.tcss")  # absolute: subclasses elsewhere find it too
    TITLE = "cachewatch"
    ENABLE_COMMAND_PALETTE = True
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [*commands.bindings()]

    def __init__(self, source: SnapshotSource, *, refresh_s: float = 1.0, readonly: bool = False,
                 keymap: Mapping[str, str] | None = None, engine_name: str = "", intro: str = "") -> None:
        super().__init__()
        self.source = source
        self.refresh_s = max(0.1, float(refresh_s))
        self.readonly = readonly
        self.keymap = commands.check_keymap(keymap or {})
        self.offered = {a.id for a in commands.available(readonly)}
        self.engine_name = engine_name or getattr(source, "name", "")
        self.intro = intro
        self.snapshot: EngineSnapshot | None = None
        self.last_error: str | None = None
        self.fatal_error: str | None = None
        self.commands_sent: list[tuple[str, dict[str, Any]]] = []  # for the exit message and tests
        self._poll_timer: Timer | None = None
        self._polling = False
        self._poll_again = False
        self._detaching = False
        self._awaited_jobs: dict[str, str] = {}  # job id -> action that started it (shows a result screen)
        self._shown_results: set[str] = set()
        self._home_source: SnapshotSource | None = None  # set while a fleet engine is shown instead (F)

    # ------------------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield TitleBar(self.engine_name, readonly=self.readonly, id="title")
        yield AlertBanner(id="alerts", readonly=self.readonly)
        with Grid(id="body"):
            yield CachePanel(id="cache")
            yield TrainingPanel(id="training")
            yield GpuPanel(id="gpu")
            yield EvictionLog(id="evictions")
            yield TrainingLog(id="log")
        yield JobsBar(id="jobs")
        yield Footer(compact=True, show_command_palette=False)

    @overload
    def _main(self, selector: type[_W]) -> _W: ...
    @overload
    def _main(self, selector: str, expect: type[_W]) -> _W: ...

    def _main(self, selector: str | type[_W], expect: type[_W] | None = None) -> _W:
        """A widget of the dashboard screen, whatever dialog is on top (``App.query_one`` looks at the top one)."""
        main = self.screen_stack[0]
        if isinstance(selector, str):
            assert expect is not None
            return main.query_one(selector, expect)
        return main.query_one(selector)

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self._main(AlertBanner).display = False
        self._main(JobsBar).display = False
        self._main("#log", TrainingLog).focus()
        if self.intro:
            self.notify(self.intro, timeout=12)
        self.poll_now()

    # ------------------------------------------------------------------------------ polling
    def poll_now(self) -> None:
        """Poll at once (after a command), or as soon as the poll in flight is done."""
        if self._detaching:
            return
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self._polling = True
        self._poll_worker()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll_worker(self) -> None:
        source = self.source
        self.post_message(Polled(source.poll(), source))

    def on_polled(self, message: Polled) -> None:
        self._polling = False
        if not self.is_running:
            return  # a poll that lands while the app shuts down: its widgets are already gone
        if message.source is not None and message.source is not self.source:
            self.poll_now()  # from the engine shown before F switched: not this engine's news
            return
        with self.batch_update():  # one frame per poll, however many panels changed
            self.apply(message.update)
        if self._detaching:
            return
        if self._poll_again:
            self._poll_again = False
            self.poll_now()
        else:
            self._poll_timer = self.set_timer(self.refresh_s, self.poll_now)

    def apply(self, update: Update) -> None:
        """Show one update. Called on the UI thread with immutable values only."""
        if update.fatal:
            self.fatal_error = update.error
            self.exit(return_code=2, message=update.error)
            return
        self.last_error = update.error
        snap = update.snapshot
        if snap is not None:
            self.snapshot = snap
            self.engine_name = snap.engine.name
        self._main(TitleBar).show(self.snapshot, update.error)
        self._main(AlertBanner).show(self.snapshot)
        self._main(JobsBar).show(self.snapshot)
        log = self._main("#log", TrainingLog)
        log.add(update.log_lines, reset=update.log_reset, pending=update.log_pending)
        for panel in self.screen_stack[0].query("#cache, #training, #gpu, #evictions"):
            panel.show(self.snapshot, update.history)  # type: ignore[attr-defined]
        if snap is not None:
            self._show_finished_jobs(snap)

    def _show_finished_jobs(self, snap: EngineSnapshot) -> None:
        for job in snap.jobs:
            if job.id in self._awaited_jobs and job.state != "running" and job.id not in self._shown_results:
                self._shown_results.add(job.id)
                self._awaited_jobs.pop(job.id, None)
                self.push_screen(JobResultScreen(job, can_repair="verify" in self.offered and not self.readonly),
                                 self._after_result)

    def _after_result(self, choice: str | None) -> None:
        if choice == "repair":
            self.send_asking("verify", "verify", {"repair": True}, "Repair the cache?",
                             "Corrupt entries are deleted from the cache and sound files are re-indexed.\n"
                             "Missing entries are not rebuilt (that is `cachewatch build`).", yes="Repair")

    # ------------------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run_action" and parameters:
            if parameters[0] not in self.offered:
                return False  # --readonly: not offered at all, not in the footer
        return True

    def action_run_action(self, action_id: str) -> None:
        if action_id not in self.offered:
            return
        getattr(self, f"_do_{action_id}")()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action in commands.available(self.readonly):
            keys = "/".join(commands.key_label(k) for k in commands.effective_keys(action, self.keymap))
            yield SystemCommand(f"{action.label} ({keys})", action.help,
                                lambda aid=action.id: self.action_run_action(aid))

    def send(self, action_id: str, command: str, args: Mapping[str, Any] | None = None) -> None:
        """Send one engine command from a worker thread; the outcome comes back as :class:`CommandDone`."""
        args = dict(args or {})
        self.commands_sent.append((command, args))
        self._command_worker(action_id, command, args)

    def send_asking(self, action_id: str, command: str, args: Mapping[str, Any], title: str, text: str, *,
                    yes: str) -> None:
        """Send ``command``, asking first exactly when the command table says this call is
        destructive (``COMMANDS[command].is_destructive(args)``): a split that keeps its
        originals starts at once, one that deletes them asks."""
        if not COMMANDS[command].is_destructive(args):
            self.send(action_id, command, args)
            return
        self.push_screen(ConfirmationModal(title, text, yes=yes),
                         lambda ok: self.send(action_id, command, args) if ok else None)

    @work(thread=True, group="commands", exit_on_error=False)
    def _command_worker(self, action_id: str, command: str, args: dict[str, Any]) -> None:
        try:
            result = self.source.command(command, args)
        except CommandFailed as exc:
            self.post_message(CommandDone(action_id, command, None, str(exc)))
        except Exception as exc:  # the dashboard outlives any one command
            self.post_message(CommandDone(action_id, command, None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(CommandDone(action_id, command, result, None))

    def on_command_done(self, message: CommandDone) -> None:
        if not self.is_running:
            return  # the reply came back while the dashboard shuts down
        if message.error is not None:
            self.notify(message.error, title=f"{message.command} refused", severity="error", timeout=8)
        elif message.result is not None:
            result = message.result
            text = _describe_result(message.command, result)
            if isinstance(result, JobResult) and message.command in ("verify", "split", "build", "push", "pull"):
                self._awaited_jobs[result.job.id] = message.action_id
            self.notify(text, title=message.command, timeout=6)
        self.poll_now()

    # -- each action; names match commands.ACTIONS ids
    def _cache_view(self) -> CacheView | None:
        if self.snapshot is None:
            return None
        return next((c for c in self.snapshot.caches if c.stats is not None), None)

    def _why_not(self, text: str) -> None:
        self.notify(text, severity="warning", timeout=5)

    def _do_evict(self) -> None:
        view = self._cache_view()
        if view is None:
            self._why_not("no managed cache to evict: set [cache] root and max_size in cachewatch.toml")
            return

        # The dialog is the question an evict asks (the table: destructive unless dry_run, and the
        # dialog sends no dry run); its yes is the red "Evict (y)".
        def chosen(request: EvictRequest | None) -> None:
            if request is not None:
                self.send("evict", "evict", request.args())

        self.push_screen(EvictDialog(view), chosen)

    def _do_verify(self) -> None:
        self._start_cache_job("verify")

    def _do_push(self) -> None:
        self._start_cache_job("push")  # the engine refuses in one line when [cache] remote is not set

    def _do_pull(self) -> None:
        self._start_cache_job("pull")

    def _start_cache_job(self, kind: str) -> None:
        """A job on the managed cache, its result shown when it ends; one of a kind at a time."""
        if self._cache_view() is None:
            self._why_not(f"no managed cache to {kind}")
            return
        running = self._running_job(kind)
        if running is not None:
            self._awaited_jobs[running.id] = kind
            self._why_not(f"{running.id} is already running; its result will show when it ends")
            return
        self.send(kind, kind, {})

    def _running_job(self, kind: str) -> JobView | None:
        if self.snapshot is None:
            return None
        return next((j for j in self.snapshot.jobs if j.kind == kind and j.state == "running"), None)

    def _do_split(self) -> None:
        def chosen(request: SplitRequest | None) -> None:
            if request is not None:
                self.send_asking("split", "split", request.args(), "Start the split?", request.describe(), yes="Split")

        self.push_screen(SplitDialog(), chosen)

    def _training(self) -> TrainingInfo | None:
        return None if self.snapshot is None else self.snapshot.training

    def _do_pause(self) -> None:
        t = self._training()
        if t is None:
            self._why_not("this engine runs no training")
            return
        state = t.state.value
        if state == "paused":
            self.send("pause", "resume")
        elif state == "running":
            self.send("pause", "pause")
        else:
            self._why_not(f"the training is {state}; nothing to pause")

    def _do_restart(self) -> None:
        t = self._training()
        if t is None:
            self._why_not("this engine runs no training")
            return
        if t.state.over:  # starting an ended training again harms nothing: no question
            self.send_asking("restart", "start", {}, "Start the training again?",
                             f"{' '.join(t.command)}\nstarts again with the same command.", yes="Start")
            return
        self.send_asking("restart", "restart", {}, "Restart the training?",
                         "It is stopped gracefully (SIGTERM, then SIGKILL after the grace period) and started "
                         "again with the same command.\nProgress since its last checkpoint is lost.", yes="Restart")

    def _do_stop(self) -> None:
        t = self._training()
        if t is None or t.state.over:
            self._why_not("no training is running")
            return
        self.send_asking("stop", "stop", {"what": "training"}, "Stop the training?",
                         "It is stopped gracefully (SIGTERM, then SIGKILL after the grace period).\n"
                         "The engine and this dashboard stay; r starts it again.", yes="Stop training")

    def _do_cancel_job(self) -> None:
        running = [j for j in (self.snapshot.jobs if self.snapshot else ()) if j.state == "running"]
        if not running:
            self._why_not("no job is running")
            return
        job = running[0]
        self.send("cancel_job", "cancel_job", {"job_id": job.id})

    def _newest_alert(self) -> Alert | None:
        alerts = shown_alerts(self.snapshot)
        return alerts[0] if alerts else None

    def _do_alert(self) -> None:
        alert = self._newest_alert()
        if alert is None:
            self._why_not("no alert to show")
            return
        others = len(shown_alerts(self.snapshot)) - 1
        can_dismiss = "dismiss" in self.offered

        def closed(choice: str | None) -> None:
            if choice == "dismiss":
                self.send("dismiss", "dismiss_alert", {"alert_id": alert.id})

        assert self.snapshot is not None
        self.push_screen(AlertDetailsScreen(alert, now=self.snapshot.time, can_dismiss=can_dismiss, others=others),
                         closed)

    def _do_dismiss(self) -> None:
        alert = self._newest_alert()
        if alert is None:
            self._why_not("no alert to dismiss")
            return
        self.send("dismiss", "dismiss_alert", {"alert_id": alert.id})

    def _do_log(self) -> None:
        self._main("#log", TrainingLog).focus()

    def _do_evictions(self) -> None:
        self._main(EvictionLog).focus()

    def _do_zoom(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        elif self.focused is not None:
            self.screen.maximize(self.focused)

    def _do_help(self) -> None:
        self.push_screen(HelpScreen(list(commands.help_rows(self.readonly, self.keymap)), readonly=self.readonly))

    def _do_fleet(self) -> None:
        self._fleet_worker()

    @work(thread=True, group="fleet", exit_on_error=False)
    def _fleet_worker(self) -> None:
        # The fleet is the one of the local engine's config (or of CACHEWATCH_FLEET_URL).
        from cachewatch.engine.config import load_config
        from cachewatch.engine.errors import CachewatchError

        home = self.snapshot if self._home_source is None else None
        path = home.engine.config_path if home is not None else None
        try:
            cfg = load_config(path if path and Path(path).is_file() else None).fleet
        except CachewatchError as exc:
            self.call_from_thread(self._why_not, f"fleet: {exc}")
            return
        if cfg.url is None:
            self.call_from_thread(self._why_not, "no fleet: set [fleet] url in cachewatch.toml (docs/fleet.md)")
            return
        from .screens.fleet import FleetScreen

        self.call_from_thread(self.push_screen, FleetScreen(cfg, refresh_s=self.refresh_s),
                              lambda eid: self._show_remote(cfg, eid))

    def _show_remote(self, cfg: Any, engine_id: str | None) -> None:
        """Show a fleet engine (through Redis) in place of the local one; q comes back."""
        if engine_id is None:
            return
        from .fleet_source import RedisSource

        if self._home_source is None:
            self._home_source = self.source
        else:
            self._close_later(self.source)
        self.source = RedisSource(cfg, engine_id)
        self.snapshot = None
        self.engine_name = engine_id
        self.notify(f"{engine_id} through Redis; q comes back to {self._home_source.name or 'the local engine'}", timeout=6)
        self.poll_now()

    @work(thread=True, group="close", exit_on_error=False)
    def _close_later(self, source: SnapshotSource) -> None:
        source.close()

    def _do_quit(self) -> None:
        if self._home_source is not None:  # back from a fleet engine to the local one
            self._close_later(self.source)
            self.source, self._home_source = self._home_source, None
            self.snapshot = None
            if hasattr(self.source, "_log_offset"):
                self.source._log_offset = None  # the local log is shown again from its recent tail
            self.poll_now()
            return
        self._detaching = True
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self.exit()


_PAST = {"pause": "paused", "resume": "resumed", "restart": "restarted", "start": "started", "stop": "stopped"}


def _describe_result(command: str, result: CommandResult) -> str:
    """One line saying what the engine did."""
    if isinstance(result, EvictResult):
        return result.describe or f"evicted {result.files} files"
    if isinstance(result, (TrainingResult, StopResult)) and command in _PAST:
        state = result.training.state.value if result.training is not None else None
        return f"training {_PAST[command]}" + (f" (now {state})" if state else "")
    if isinstance(result, JobResult):
        if command == "cancel_job":
            return f"cancelling {result.job.id}"
        return f"{command} started ({result.job.id}); the result shows when it ends"
    if isinstance(result, AlertResult):
        return f"dismissed: {result.alert.title}"
    return "done"


def css_path() -> Path:
    return Path(__file__).with_name("dashboard.tcss")

"""What the terminal shows: phase headers, one progress bar per training, validation as it lands, results.

NeMo's and Lightning's INFO/WARNING logging and Python warnings (which NeMo captures) are library chatter:
`route_library_logs` sends them to a log file in the run's folder instead of the terminal (`verbose=True`
keeps them on the terminal too). Until the file is opened they are held in memory, so a command that stops
on bad input before any output folder exists leaves nothing behind. Warnings a user must act on (dropped
utterances, resampling, `<unk>` characters) come from the project's own data check and are printed by it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.callbacks import TQDMProgressBar

LIBRARY_LOGGERS = ("nemo_logger", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                   "lhotse", "numba", "nv_one_logger", "py.warnings", "bitsandbytes", "onnxruntime")


class _LibraryLog(logging.Handler):
    """Holds records in memory until `open(path)`, then appends them (and every later one) to that file; with
    `echo`, also prints each one to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        self.path: Path | None = None
        self.echo = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.echo:
            print(self.format(record), file=sys.stderr)
        if self._file is None:
            self._held.append(record)
        else:
            self._file.emit(record)

    def open(self, path: Path) -> None:
        if self._file is not None and self.path == path:
            return
        if self._file is not None:
            self._file.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file, self.path = logging.FileHandler(path, encoding="utf-8"), path
        self._file.setFormatter(self.formatter)
        for record in self._held:
            self._file.emit(record)
        self._held = []


_library_log = _LibraryLog()


def quiet_libraries() -> None:
    """Route library logging, and what NeMo prints while it is first imported, to the (not yet opened) library
    log. Call it first thing in a command, before anything imports NeMo."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    for name in LIBRARY_LOGGERS:  # before the import, so records logged during it are routed too
        lg = logging.getLogger(name)
        if _library_log not in lg.handlers:
            lg.addHandler(_library_log)
        lg.propagate = False
    printed = io.StringIO()
    with redirect_stdout(printed), redirect_stderr(printed):
        import lightning.pytorch  # noqa: F401  (adds its own terminal handler on import)
        from nemo.utils import logging as nemo_logging

        try:  # the old package name, which some NeMo modules still log through
            import pytorch_lightning  # noqa: F401
        except ImportError:
            pass
    for line in printed.getvalue().splitlines():
        logging.getLogger("nemo_logger").info(line)
    nemo_logging.remove_stream_handlers()
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
            lg.removeHandler(h)
    logging.captureWarnings(True)  # warnings NeMo does not capture land in "py.warnings"


def show_library_logs() -> None:
    """`verbose=true`: print library messages on the terminal as well (those held so far first)."""
    for record in _library_log._held:
        print(_library_log.format(record), file=sys.stderr)
    _library_log.echo = True


def open_library_log(path: str | Path) -> Path:
    """Start writing library messages (those held so far first) to `path`; returns it."""
    _library_log.open(Path(path))
    return Path(path)


@contextmanager
def phase(title: str) -> Iterator[None]:
    """A header line for one step of a command, so a person sees where the run is."""
    print(f"\n== {title} ==", flush=True)
    yield


def say(message: str) -> None:
    """Print a line without breaking an active progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stdout)


class StepProgressBar(TQDMProgressBar):
    """Lightning's progress bar counted in optimizer steps over the whole run (Lhotse's epochs have no length),
    with the loss, steps/s and time left; a resumed run starts the bar at its step."""

    def __init__(self, desc: str = "training") -> None:
        super().__init__(refresh_rate=1)
        self.desc = desc

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.set_description(self.desc, refresh=False)
        return bar

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.n = trainer.global_step

    def on_train_epoch_start(self, trainer, *_) -> None:
        pass  # one bar for the whole run

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        bar.n = trainer.global_step
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass

    def on_train_end(self, *_) -> None:
        self.train_progress_bar.close()

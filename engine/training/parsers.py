"""Progress read from a training's raw output, for scripts that do not call :mod:`report`.

Output arrives from a pipe in arbitrary chunks: bytes cut in the middle of a UTF-8
character, lines split across chunks, ``\\r`` redraws of a progress bar, ANSI colour and
cursor codes. :class:`OutputParser` turns that stream into typed observations:

* :class:`ParsedProgress` from tqdm bars (known and unknown totals, ``it/s`` and ``s/it``,
  postfix metrics, a ``Epoch 3:`` description), ``Epoch 4/15`` lines and their variants,
  Keras progress lines (Keras 2 ``[====>....]`` and Keras 3 ``━━━`` bars), and Hugging Face
  Trainer log dicts (Python or JSON quoting);
* :class:`~cachewatch.engine.training.oom.CudaOomAlert` and
  :class:`~cachewatch.engine.training.oom.HostOomAlert` from OOM messages.

A line counts once it is terminated by ``\\r`` or ``\\n``, except a tqdm bar: tqdm leaves its
latest state unterminated until the next redraw (which may be a minute away for slow
steps), so a complete-looking bar at the end of the buffer is reported at once and not
again when its terminator arrives. Any chunking of the same output gives the same
observations (tested with hypothesis), and no input makes the parser raise.
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Union

from .oom import CudaOomAlert, HostOomAlert, OomDetector

__all__ = [
    "ParsedProgress",
    "Observation",
    "OutputParser",
    "strip_ansi",
    "parse_line",
    "parse_tqdm",
    "parse_epoch",
    "parse_keras",
    "parse_hf_log",
    "parse_rich",
    "parse_max_epochs",
]

MAX_LINE_CHARS = 16384

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase line
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # two-character escapes
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences or other control characters (tabs kept)."""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    return _CONTROL.sub("", text)


@dataclass(frozen=True)
class ParsedProgress:
    """One progress reading from the output. Fields the line did not give are None.

    ``epoch`` is the number as printed (1-based ``Epoch 4/15``, or 0-based for Lightning's
    ``Epoch 0:``); ``epochs_done`` is a count of completed epochs where the output gives
    one instead (Hugging Face's ``'epoch': 1.5``, a tqdm bar over epochs). ``step`` and
    ``total_steps`` are the bar's position and length. ``phase`` is ``"train"`` unless the
    bar's description says validation, evaluation or loading (``"other"``).
    """

    format: str  # tqdm, rich, epoch, keras, hf
    epoch: int | None = None
    total_epochs: int | None = None
    epochs_done: float | None = None
    step: int | None = None
    total_steps: int | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    rate_steps_per_s: float | None = None
    loss: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    phase: str = "train"
    zero_based: bool = False  # the source is known to count epochs from 0 (Lightning)

    kind = "progress"

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def __eq__(self, other: object) -> bool:  # NaN metrics must still compare equal to themselves
        if not isinstance(other, ParsedProgress):
            return NotImplemented
        return _key(self) == _key(other)

    def __hash__(self) -> int:
        return hash(_key(self))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "format": self.format}
        for name in (
            "epoch", "total_epochs", "epochs_done", "step", "total_steps",
            "elapsed_s", "remaining_s", "rate_steps_per_s", "loss",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["metrics"] = dict(self.metrics)
        out["description"] = self.description
        out["phase"] = self.phase
        if self.zero_based:
            out["zero_based"] = True
        return out


def _key(p: ParsedProgress) -> tuple:
    def norm(v: Any) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return (
        p.format, p.epoch, p.total_epochs, norm(p.epochs_done), p.step, p.total_steps,
        norm(p.elapsed_s), norm(p.remaining_s), norm(p.rate_steps_per_s), norm(p.loss),
        tuple(sorted((k, norm(v)) for k, v in p.metrics.items())), p.description, p.phase, p.zero_based,
    )


Observation = Union[ParsedProgress, CudaOomAlert, HostOomAlert]

# ---------------------------------------------------------------- numbers and times

_FLOAT = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _clock_s(text: str) -> float | None:
    """``01:02`` / ``1:02:03`` (tqdm, Keras) in seconds."""
    parts = text.strip().split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    total = 0.0
    for p in parts:
        total = total * 60 + int(p)
    return total


_UNIT_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _duration_s(text: str) -> float | None:
    """``1:02``, ``62s``, ``125ms``, ``1h 02m`` in seconds."""
    text = text.strip()
    if ":" in text:
        return _clock_s(text)
    total, found = 0.0, False
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(us|µs|ms|min|s|m|h)\b", text):
        total += float(number) * _UNIT_S[unit]
        found = True
    return total if found else None


def _metric_pairs(text: str, sep: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in re.findall(r"([A-Za-z_][\w./-]*)\s*" + sep + r"\s*(" + _FLOAT + r")(?![\w.])", text, re.IGNORECASE):
        v = _to_float(value)
        if v is not None:
            out[name] = v
    return out


_LOSS_KEYS = ("loss", "train_loss", "training_loss", "train/loss")


def _split_loss(metrics: dict[str, float]) -> tuple[float | None, dict[str, float]]:
    for k in _LOSS_KEYS:
        if k in metrics:
            rest = dict(metrics)
            return rest.pop(k), rest
    return None, metrics


# ---------------------------------------------------------------- epoch lines

_EPOCH_OF = re.compile(
    r"\bepoch\b\s*[:=#]?\s*[\[(]?\s*(\d{1,7})\s*(?:/|\bof\b|\bout of\b)\s*(\d{1,7})\s*[\])]?",
    re.IGNORECASE,
)
_EPOCH_ALONE = re.compile(r"^\s*[\[(]?\s*epoch\b\s*[:=#]?\s*[\[(]?(\d{1,7})(?![\d/]|\s*(?:/|of\b)|[.,]\d)", re.IGNORECASE)
_EPOCHS_WORD = re.compile(r"^\s*epochs?\s*$", re.IGNORECASE)


def _epoch_fields(text: str) -> tuple[int | None, int | None]:
    m = _EPOCH_OF.search(text)
    if m:
        epoch, total = int(m.group(1)), int(m.group(2))
        if total > 0 and epoch <= total:
            return epoch, total
        return None, None
    m = _EPOCH_ALONE.search(text)
    if m:
        return int(m.group(1)), None
    return None, None


def parse_epoch(line: str) -> ParsedProgress | None:
    """``Epoch 4/15``, ``epoch 4 of 15``, ``Epoch [4/15]``, ``Epoch: 4/15``; ``Epoch 4`` at line start."""
    if "poch" not in line and "POCH" not in line:
        return None
    epoch, total = _epoch_fields(line)
    if epoch is None:
        return None
    return ParsedProgress(format="epoch", epoch=epoch, total_epochs=total)


# ---------------------------------------------------------------- tqdm

_TQDM_KNOWN = re.compile(
    r"^(?P<left>.*?)(?P<n>\d+(?:\.\d+)?)(?P<ns>[kKMGTP]?)[A-Za-z]*/(?P<t>\d+(?:\.\d+)?|\?)(?P<ts>[kKMGTP]?)[A-Za-z]*"
    r"\s*\[(?P<elapsed>\d+(?::\d\d){1,2})<(?P<remaining>\d+(?::\d\d){1,2}|\?)"
    r"(?:,\s*(?P<rate>[^,\]]*))?(?P<postfix>,[^\]]*)?\]\s*$"
)
_TQDM_UNKNOWN = re.compile(
    r"^(?P<left>.*?)(?P<n>\d+(?:\.\d+)?)(?P<ns>[kKMGTP]?)(?P<nunit>[A-Za-z]+)\s*\[(?P<elapsed>\d+(?::\d\d){1,2})"
    r"(?:,\s*(?P<rate>[^,\]]*))?(?P<postfix>,[^\]]*)?\]\s*$"
)
# Lightning's bar for an epoch of unknown length has no percentage: "Epoch 0: |     | 12/? [...]".
_TQDM_LBAR = re.compile(r"(?:(?P<desc>.*?):?\s*)?(?:(?P<pct>\d{1,3})%)?\|[^|]*\|\s*$")
_RATE_PER_S = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTP]?)[A-Za-z]*/s\s*$")
_S_PER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTP]?)s/[A-Za-z]+\s*$")
_NOT_TRAINING = re.compile(
    r"valid|\bval\b|eval|test|predict|infer|download|load|shard|map\b|tokeni[sz]|extract|preprocess|build|cach|sanity|writ",
    re.IGNORECASE,
)


def _scaled(number: str, prefix: str) -> float:
    return float(number) * _SI.get(prefix, 1.0)


def _rate(text: str | None) -> float | None:
    if not text:
        return None
    m = _RATE_PER_S.match(text)
    if m:
        return _scaled(m.group(1), m.group(2))
    m = _S_PER.match(text)
    if m:
        seconds = _scaled(m.group(1), m.group(2))
        return 1.0 / seconds if seconds > 0 else None
    return None


_TQDM_MAX_CHARS = 1024


def parse_tqdm(line: str) -> ParsedProgress | None:
    """A tqdm bar: ``Epoch 3:  45%|████▌     | 45/100 [00:12<00:15,  3.61it/s, loss=0.3]`` or ``45it [00:12, 3.61it/s]``."""
    if "[" not in line or "]" not in line:
        return None
    if len(line) > _TQDM_MAX_CHARS:
        # A bar is a terminal line wide; the cut keeps the regex linear on pathological input.
        line = line[-_TQDM_MAX_CHARS:]
    m = _TQDM_KNOWN.match(line)
    known = m is not None
    if m is None:
        m = _TQDM_UNKNOWN.match(line)
        if m is None:
            return None
    left = m.group("left")
    if known:
        lb = _TQDM_LBAR.fullmatch(left)
        if lb is not None:
            desc = lb.group("desc") or ""
        elif not left.strip():
            desc = ""
        elif left.rstrip().endswith(":") or left.endswith(" "):
            desc = left  # a custom bar_format without the bar, or a plain description
        else:
            return None  # digits glued to other text: not a bar
    else:
        if left and not left.endswith(" "):
            return None
        desc = left
    desc = desc.strip().rstrip(":").strip()
    n = _scaled(m.group("n"), m.group("ns"))
    total = _scaled(m.group("t"), m.group("ts")) if known and m.group("t") != "?" else None
    elapsed = _clock_s(m.group("elapsed"))
    remaining = _clock_s(m.group("remaining")) if known and m.group("remaining") != "?" else None
    metrics = _metric_pairs(m.group("postfix") or "", "=")
    metrics.pop("v_num", None)  # Lightning's run version, not a metric
    loss, metrics = _split_loss(metrics)
    rate = _rate(m.group("rate"))
    byte_bar = "B/s" in (m.group("rate") or "")  # a download or file copy, not training steps
    phase = "other" if byte_bar or (desc and _NOT_TRAINING.search(desc)) else "train"
    if desc and _EPOCHS_WORD.match(desc):
        # An outer bar over epochs ("Epochs: 27%|██▋ | 4/15 [...]"): its count is epochs done.
        return ParsedProgress(
            format="tqdm", total_epochs=int(round(total)) if total else None, epochs_done=n,
            elapsed_s=elapsed, remaining_s=remaining, loss=loss, metrics=metrics, description=desc, phase=phase,
        )
    epoch, total_epochs = _epoch_fields(desc) if desc else (None, None)
    return ParsedProgress(
        format="tqdm",
        epoch=epoch,
        total_epochs=total_epochs,
        step=int(round(n)),
        total_steps=int(round(total)) if total else None,
        elapsed_s=elapsed,
        remaining_s=remaining,
        rate_steps_per_s=rate,
        loss=loss,
        metrics=metrics,
        description=desc,
        phase=phase,
    )


# ---------------------------------------------------------------- Keras

_KERAS = re.compile(
    r"^\s*(?P<n>\d+)/(?P<total>\d+|Unknown)\s*(?:\[[=>.]*\]|[━─]+)?\s*(?P<rest>(?:-|\d).*)?$"
)
_KERAS_STEP_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*(us|µs|ms|s)/(?:step|sample)")


def parse_keras(line: str) -> ParsedProgress | None:
    """``120/500 [=====>....] - ETA: 1:02 - loss: 0.4123 - accuracy: 0.87`` (Keras 2) or the ``━━━`` form (Keras 3)."""
    m = _KERAS.match(line)
    if m is None:
        return None
    rest = m.group("rest") or ""
    has_bar = "[" in line or "━" in line or "─" in line
    if not has_bar and "step" not in rest and "ETA" not in rest:
        return None  # a bare "3/10" is no Keras line
    n = int(m.group("n"))
    total = None if m.group("total") == "Unknown" else int(m.group("total"))
    if total is not None and (total == 0 or n > total):
        return None
    remaining = elapsed = rate = None
    metrics: dict[str, float] = {}
    for i, part in enumerate(p.strip() for p in rest.strip().lstrip("-").split(" - ")):
        if not part:
            continue
        if part.startswith("ETA:"):
            remaining = _duration_s(part[4:])
            continue
        st = _KERAS_STEP_TIME.search(part)
        if st:
            per_step = float(st.group(1)) * _UNIT_S[st.group(2)]
            rate = 1.0 / per_step if per_step > 0 else None
            shown = _duration_s(part[: st.start()])
            if shown is not None:
                if total is not None and n < total:
                    remaining = shown  # Keras 3 shows the ETA unlabelled while the epoch runs
                else:
                    elapsed = shown
            continue
        if i == 0 and re.fullmatch(r"[\d:]+|\d+(?:\.\d+)?(?:ms|s|m|h)", part):
            shown = _duration_s(part)
            if total is not None and n < total:
                remaining = shown
            else:
                elapsed = shown
            continue
        metrics.update(_metric_pairs(part, ":"))
    loss, metrics = _split_loss(metrics)
    return ParsedProgress(
        format="keras", step=n, total_steps=total, elapsed_s=elapsed, remaining_s=remaining,
        rate_steps_per_s=rate, loss=loss, metrics=metrics,
    )


# ---------------------------------------------------------------- Rich progress (Lightning's RichProgressBar)

_RICH = re.compile(
    r"^(?P<desc>.*?)\s*[━╸╺─]+\s+(?P<n>\d+)/(?P<t>\d+|--|\?)\s+"
    r"(?P<elapsed>\d+(?::\d\d){1,2})\s*•\s*(?P<remaining>\d+(?::\d\d){1,2}|-:--:--)"
    r"(?:\s+(?P<rate>\d+(?:\.\d+)?\s*(?:[kKM]?it/s|s/it)))?(?P<rest>.*)$"
)


def parse_rich(line: str) -> ParsedProgress | None:
    """A Rich progress row as Lightning's ``RichProgressBar`` draws it, escape codes stripped:
    ``Epoch 2/9  ━━━━━━╸━━━━ 120/500 0:00:41 • 0:02:10 2.91it/s train_loss: 0.41``.

    Lightning numbers epochs from 0 and prints ``max_epochs - 1`` as the total
    (``Epoch 9/9`` is the tenth of ten), so the total is read as a count (+1) and the
    observation says it counts from 0. The ``elapsed • remaining`` column is Lightning's own.
    """
    if "•" not in line or not any(c in line for c in "━╸╺─"):
        return None
    m = _RICH.match(line[-_TQDM_MAX_CHARS:])
    if m is None:
        return None
    desc = m.group("desc").strip()
    if m.group("t").isdigit():
        total: int | None = int(m.group("t"))
        if total == 0:
            total = None
    else:
        total = None
    n = int(m.group("n"))
    if total is not None and n > total:
        return None
    metrics = _metric_pairs(m.group("rest") or "", ":")
    metrics.pop("v_num", None)
    loss, metrics = _split_loss(metrics)
    epoch = total_epochs = None
    zero_based = False
    em = re.match(r"^epoch\s+(\d{1,7})(?:\s*/\s*(\d{1,7}))?$", desc, re.IGNORECASE)
    if em:
        epoch, zero_based = int(em.group(1)), True
        if em.group(2) is not None and int(em.group(2)) >= epoch:
            total_epochs = int(em.group(2)) + 1
    phase = "other" if desc and _NOT_TRAINING.search(desc) else "train"
    return ParsedProgress(
        format="rich", epoch=epoch, total_epochs=total_epochs, step=n, total_steps=total,
        elapsed_s=_clock_s(m.group("elapsed")),
        remaining_s=_clock_s(m.group("remaining")) if total is not None else None,
        rate_steps_per_s=_rate(m.group("rate")), loss=loss, metrics=metrics, description=desc,
        phase=phase, zero_based=zero_based,
    )


_MAX_EPOCHS = re.compile(r"`?max_epochs=(\d{1,7})`?\s+reached")


def parse_max_epochs(line: str) -> ParsedProgress | None:
    """Lightning's closing ``Trainer.fit` stopped: `max_epochs=4` reached.``: the run had 4 epochs."""
    if "max_epochs=" not in line:
        return None
    m = _MAX_EPOCHS.search(line)
    if m is None or int(m.group(1)) <= 0:
        return None
    return ParsedProgress(format="epoch", total_epochs=int(m.group(1)), description="max_epochs")


# ---------------------------------------------------------------- Hugging Face Trainer logs

_DICT = re.compile(r"\{[^{}]*\}\s*$")
_HF_PAIR = re.compile(
    # transformers 5 prints the numbers as strings ('0.3305', '1.041e-05'); 4.x as numbers.
    r"""['"]([A-Za-z_][\w./-]*)['"]\s*:\s*(?:np\.float\d*\(|np\.int\d*\(|tensor\()?\s*['"]?\s*(""" + _FLOAT + r")" + r"""\s*['"]?\s*[,)}]""",
    re.IGNORECASE,
)
_HF_KEYS = re.compile(r"^(?:epoch$|loss$|eval_|train_)")


def parse_hf_log(line: str) -> ParsedProgress | None:
    """``{'loss': 0.41, 'learning_rate': 3e-05, 'epoch': 1.5}`` (Trainer's print) or its JSON form."""
    if "{" not in line:
        return None
    m = _DICT.search(line)
    if m is None:
        return None
    pairs = {}
    for key, value in _HF_PAIR.findall(m.group(0)):
        v = _to_float(value)
        if v is not None:
            pairs[key] = v
    if "epoch" not in pairs and not any(_HF_KEYS.match(k) for k in pairs):
        return None
    epochs_done = pairs.pop("epoch", None)
    if epochs_done is not None and (math.isnan(epochs_done) or epochs_done < 0 or math.isinf(epochs_done)):
        epochs_done = None
    step_value = pairs.pop("step", None)
    step = int(step_value) if step_value is not None and step_value >= 0 and step_value.is_integer() else None
    loss, metrics = _split_loss(pairs)
    return ParsedProgress(format="hf", epochs_done=epochs_done, step=step, loss=loss, metrics=metrics)


_PARSERS = (parse_max_epochs, parse_tqdm, parse_rich, parse_keras, parse_hf_log, parse_epoch)


def parse_line(line: str) -> ParsedProgress | None:
    """The progress one clean line (no escape codes, no terminator) shows, or None."""
    for parse in _PARSERS:
        result = parse(line)
        if result is not None:
            return result
    return None


# ---------------------------------------------------------------- the stream


class OutputParser:
    """Feed it output chunks as they come; it returns the observations each chunk completes.

    Not thread-safe: one parser per output stream (or one per merged stdout+stderr pipe).
    """

    def __init__(self, *, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self.max_line_chars = max_line_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._tail_emitted: str | None = None
        self._row_emitted: str | None = None
        self._row_early: ParsedProgress | None = None
        self._oom = OomDetector()
        self.lines_seen = 0

    def feed(self, chunk: bytes | bytearray | memoryview | str) -> list[Observation]:
        try:
            if isinstance(chunk, str):
                text = chunk
            else:
                text = self._decoder.decode(bytes(chunk))
        except Exception:
            return []
        return self._consume(text)

    def flush(self) -> list[Observation]:
        """End of output: the unterminated last line counts, and an open OOM message is closed."""
        out = self._consume(self._decoder.decode(b"", final=True))
        if self._buf:
            out += self._segment(self._buf)
            self._buf = ""
        out += self._oom.flush()
        return out

    def _consume(self, text: str) -> list[Observation]:
        out: list[Observation] = []
        buf = self._buf + text
        start = 0
        for m in _TERMINATOR.finditer(buf):
            out += self._segment(buf[start : m.start()])
            start = m.end()
        buf = buf[start:]
        if len(buf) > self.max_line_chars:
            buf = buf[-self.max_line_chars :]
        self._buf = buf
        if buf and "]" in buf:
            tail = strip_ansi(buf).rstrip()
            if tail != self._tail_emitted and tail.endswith("]"):
                bar = parse_tqdm(tail)
                if bar is not None:
                    self._tail_emitted = tail
                    out.append(bar)
        elif buf and ("•" in buf or "/step" in buf or "/sample" in buf):
            out += self._row_tail(buf)
        return out

    def _row_tail(self, buf: str) -> list[Observation]:
        """A Rich or Keras 3 row counts when it arrives, not when the next redraw terminates it.

        Lightning's Rich bar redraws about once a second and ends each row with the next
        frame's ``\r``: read at its terminator every step figure came a redraw late, and the
        ETA, counted down from the step's time, was a second too long in every epoch (8-13 %
        of the benchmark's Rich run). Keras 3 ends its row with the next step's ``\r``: with
        a minute a step, a minute late. A row is complete up to its speed column
        (``9.47it/s``, ``105ms/step``) once that column is there; the metrics after it may
        still be cut, so they are left to the full line, parsed again at its terminator.
        """
        tail = strip_ansi(buf).rstrip()
        if tail == self._row_emitted:
            return []
        row = None
        try:
            rich = _RICH.match(tail[-_TQDM_MAX_CHARS:]) if "•" in tail else None
            if rich is not None and rich.group("rate") is not None:
                row = parse_rich(tail[-_TQDM_MAX_CHARS:][: rich.end("rate")])
            elif rich is None:
                keras = _KERAS_STEP_TIME.search(tail)
                if keras is not None:
                    row = parse_keras(tail[: keras.end()])
        except Exception:  # a parser bug must not take the supervisor down with it
            return []
        if row is None:
            return []
        self._row_emitted, self._row_early = tail, row
        return [row]

    def _segment(self, raw: str) -> list[Observation]:
        emitted, self._tail_emitted = self._tail_emitted, None
        early, self._row_emitted, self._row_early = self._row_early, None, None
        if len(raw) > self.max_line_chars:
            raw = raw[-self.max_line_chars :]
        line = strip_ansi(raw).rstrip()
        if not line.strip():
            return []
        self.lines_seen += 1
        out: list[Observation] = []
        try:
            out += self._oom.feed_line(line)
            if line != emitted:
                progress = parse_line(line)
                if progress is not None and progress != early:  # a row without metrics was complete on arrival
                    out.append(progress)
        except Exception:  # a parser bug must not take the supervisor down with it
            pass
        return out


_TERMINATOR = re.compile(r"\r\n?|\n")

"""Output parsing on real outputs (tqdm and Keras fixtures recorded from the libraries) and on anything at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachewatch.engine.training import OutputParser, ParsedProgress, parse_line, strip_ansi
from cachewatch.engine.training.oom import CudaOomAlert

DATA = Path(__file__).parent / "data"
FIXTURES = sorted(DATA.glob("*.txt"))


def parse_all(data: bytes | str, chunks: list[int] | None = None) -> list:
    parser = OutputParser()
    out = []
    if chunks is None:
        out += parser.feed(data)
    else:
        pos = 0
        for cut in sorted(chunks):
            out += parser.feed(data[pos:cut])
            pos = cut
        out += parser.feed(data[pos:])
    return out + parser.flush()


def progress(obs: list) -> list[ParsedProgress]:
    return [o for o in obs if isinstance(o, ParsedProgress)]


# ---------------------------------------------------------------- single lines, each format


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Epoch 4/15", (4, 15)),
        ("epoch 4 of 15", (4, 15)),
        ("Epoch [4/15]", (4, 15)),
        ("Epoch: 4/15", (4, 15)),
        ("EPOCH 4 / 15 - training", (4, 15)),
        ("2025-12-19 10:00:01 INFO - Epoch 4/15 started", (4, 15)),
        ("Epoch 4", (4, None)),
        ("[Epoch 12]", (12, None)),
    ],
)
def test_epoch_lines(line: str, expected: tuple) -> None:
    p = parse_line(line)
    assert p is not None and p.format == "epoch"
    assert (p.epoch, p.total_epochs) == expected


@pytest.mark.parametrize(
    "line",
    ["epochs: 15", "num_epochs=15", "Epoch 1.5 done", "Training for 15 epochs", "Epoch 16/15", "saved at epoch 4"],
)
def test_not_epoch_lines(line: str) -> None:
    assert parse_line(line) is None


def test_tqdm_bar_with_description_and_postfix() -> None:
    p = parse_line("Epoch 3:  45%|████▌     | 45/100 [00:12<00:15,  3.61it/s, loss=0.3, acc=0.91]")
    assert p is not None and p.format == "tqdm"
    assert (p.epoch, p.step, p.total_steps) == (3, 45, 100)
    assert (p.elapsed_s, p.remaining_s, p.rate_steps_per_s) == (12.0, 15.0, 3.61)
    assert p.loss == 0.3 and dict(p.metrics) == {"acc": 0.91}
    assert p.description == "Epoch 3" and p.phase == "train"


def test_tqdm_seconds_per_iteration_and_hours() -> None:
    p = parse_line(" 45%|####5     | 45/100 [1:02:03<1:15:00,  2.50s/it]")
    assert p is not None and p.rate_steps_per_s == pytest.approx(0.4)
    assert p.elapsed_s == 3723.0 and p.remaining_s == 4500.0


def test_tqdm_unknown_total() -> None:
    p = parse_line("45it [00:12, 3.61it/s]")
    assert p is not None and (p.step, p.total_steps, p.rate_steps_per_s) == (45, None, 3.61)
    p = parse_line("Epoch 3: 45it [00:12, 3.61it/s, loss=0.3]")
    assert p is not None and (p.epoch, p.step, p.loss) == (3, 45, 0.3)


def test_tqdm_bar_over_epochs_counts_epochs_done() -> None:
    p = parse_line("Epochs:  27%|██▋       | 4/15 [12:55:12<35:31:48, 3.23h/it]")
    assert p is not None and (p.epochs_done, p.total_epochs, p.step) == (4.0, 15, None)


def test_tqdm_bars_that_are_not_training_steps() -> None:
    for line in (
        "Loading checkpoint shards: 100%|██████████| 2/2 [00:01<00:00,  1.48it/s]",
        "Validation DataLoader 0:  50%|█████     | 2/4 [00:00<00:00, 12.00it/s]",
        "model.safetensors:  45%|████▌     | 45.0M/100M [00:12<00:15, 3.61MB/s]",
    ):
        p = parse_line(line)
        assert p is not None and p.phase == "other", line


def test_keras2_lines() -> None:
    p = parse_line("120/500 [=====>........................] - ETA: 1:02 - loss: 0.4123 - accuracy: 0.8700")
    assert p is not None and p.format == "keras"
    assert (p.step, p.total_steps, p.remaining_s, p.loss) == (120, 500, 62.0, 0.4123)
    assert dict(p.metrics) == {"accuracy": 0.87}
    p = parse_line("500/500 [==============================] - 62s 124ms/step - loss: 0.41 - val_loss: 0.39")
    assert p is not None and (p.elapsed_s, p.remaining_s) == (62.0, None)
    assert p.rate_steps_per_s == pytest.approx(1 / 0.124)
    assert dict(p.metrics) == {"val_loss": 0.39}


def test_keras3_line() -> None:
    p = parse_line("120/500 ━━━━━━━━━━━━━━━━━━━━ 1:02 125ms/step - accuracy: 0.8700 - loss: 0.4123")
    assert p is not None and (p.step, p.total_steps, p.remaining_s, p.loss) == (120, 500, 62.0, 0.4123)
    assert p.rate_steps_per_s == pytest.approx(8.0)


@pytest.mark.parametrize(
    "line",
    [
        "{'loss': 0.41, 'grad_norm': 1.25, 'learning_rate': 3e-05, 'epoch': 1.5}",
        '{"loss": 0.41, "grad_norm": 1.25, "learning_rate": 3e-05, "epoch": 1.5}',
        "{'loss': np.float64(0.41), 'grad_norm': 1.25, 'learning_rate': 3e-05, 'epoch': 1.5}",
        "INFO:trainer:{'loss': 0.41, 'grad_norm': 1.25, 'learning_rate': 3e-05, 'epoch': 1.5}",
    ],
)
def test_hugging_face_log_dicts(line: str) -> None:
    p = parse_line(line)
    assert p is not None and p.format == "hf"
    assert (p.epochs_done, p.loss) == (1.5, 0.41)
    assert dict(p.metrics) == {"grad_norm": 1.25, "learning_rate": 3e-05}


def test_hugging_face_eval_dict_and_nan_loss() -> None:
    p = parse_line("{'eval_loss': 0.35, 'eval_accuracy': 0.91, 'eval_runtime': 12.3, 'epoch': 2.0}")
    assert p is not None and p.loss is None and p.metrics["eval_loss"] == 0.35 and p.epochs_done == 2.0
    p = parse_line("{'loss': nan, 'epoch': 0.1}")
    assert p is not None and p.loss != p.loss  # NaN kept: a diverged loss is news


def test_a_config_dict_is_not_a_log() -> None:
    assert parse_line("{'batch_size': 32, 'epochs': 15, 'lr': 0.001}") is None


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[1m 1/12\x1b[0m \x1b[32m━\x1b[0m\x1b[37m━━\x1b[0m\b\b") == " 1/12 ━━━"
    assert strip_ansi("\x1b]0;title\x07text\x1b[2K\x1b[A") == "text"


# ---------------------------------------------------------------- whole real outputs


def test_tqdm_fixture_with_epochs_in_the_description() -> None:
    obs = progress(parse_all((DATA / "tqdm_epoch_desc.txt").read_bytes()))
    assert {(o.epoch, o.total_epochs) for o in obs} == {(1, 2), (2, 2)}
    assert [o.step for o in obs if o.epoch == 1][-1] == 12
    last = obs[-1]
    assert last.step == 12 and last.total_steps == 12 and last.loss == pytest.approx(0.0278)


def test_tqdm_nested_bars_with_colour_and_cursor_codes() -> None:
    obs = progress(parse_all((DATA / "tqdm_nested_colour.txt").read_bytes()))
    outer = [o for o in obs if o.description == "Epochs"]
    inner = [o for o in obs if o.description.startswith("Epoch ")]
    assert [o.epochs_done for o in outer][:2] == [0.0, 1.0] and outer[-1].epochs_done == 3.0
    assert {o.epoch for o in inner} == {0, 1, 2}
    assert max(o.step for o in inner) == 8


def test_tqdm_slow_steps_report_seconds_per_iteration() -> None:
    obs = progress(parse_all((DATA / "tqdm_s_per_it.txt").read_bytes()))
    assert [o.step for o in obs] == [0, 1, 2, 3, 4, 4]
    assert obs[1].rate_steps_per_s == pytest.approx(1 / 1.2)


def test_tqdm_unknown_total_fixture() -> None:
    obs = progress(parse_all((DATA / "tqdm_unknown_total.txt").read_bytes()))
    assert obs[0].step == 0 and obs[-1].step == 15
    assert all(o.total_steps is None and o.epoch == 3 for o in obs)


def test_lightning_style_bars() -> None:
    obs = progress(parse_all((DATA / "tqdm_lightning_style.txt").read_bytes()))
    train = [o for o in obs if o.phase == "train"]
    assert {o.epoch for o in train} == {0, 1}
    assert "v_num" not in train[-1].metrics and train[-1].loss == pytest.approx(0.33)
    assert any(o.phase == "other" and o.description == "Validation DataLoader 0" for o in obs)


def test_hugging_face_trainer_output() -> None:
    obs = progress(parse_all((DATA / "hf_trainer_style.txt").read_bytes()))
    logs = [o for o in obs if o.format == "hf"]
    assert [o.epochs_done for o in logs] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert logs[0].loss == 0.6 and logs[-1].loss == 0.45  # the final dict's train_loss
    bars = [o for o in obs if o.format == "tqdm"]
    assert bars[-1].step == 40 and bars[-1].total_steps == 40


@pytest.mark.parametrize("name", ["keras3_fit.txt", "keras3_fit.pty.txt", "keras2_fit.tty.txt", "keras2_fit.pipe.txt"])
def test_keras_fit_output(name: str) -> None:
    obs = progress(parse_all((DATA / name).read_bytes()))
    epochs = [o for o in obs if o.format == "epoch"]
    bars = [o for o in obs if o.format == "keras"]
    total = epochs[0].total_epochs
    assert [o.epoch for o in epochs] == list(range(1, total + 1))
    ends = [o for o in bars if o.step == o.total_steps]
    assert len(ends) == total
    assert all("val_loss" in o.metrics and o.loss is not None for o in ends)


def test_tqdm_latest_state_is_reported_before_its_terminator() -> None:
    parser = OutputParser()
    first = parser.feed(b"\r 10%|#         | 1/10 [00:30<04:30, 30.00s/it]")
    assert [o.step for o in first] == [1]  # not held back until the next redraw, 30 s later
    again = parser.feed(b"\r 20%|##        | 2/10 [01:00<04:00, 30.00s/it]")
    assert [o.step for o in again] == [2]  # the terminated 1/10 is not reported twice


def test_half_a_utf8_character_and_half_a_line() -> None:
    data = "Epoch 3:  45%|████▌     | 45/100 [00:12<00:15,  3.61it/s]\n".encode()
    cut = data.index("█".encode()) + 1  # inside a three-byte character
    assert progress(parse_all(data, [cut])) == progress(parse_all(data))
    assert progress(parse_all(data))[0].step == 45


# ---------------------------------------------------------------- properties


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_no_bytes_crash_the_parser(data: bytes, cuts: list[int]) -> None:
    parse_all(data, [c for c in cuts if c <= len(data)])


_SNIPPETS = [
    "Epoch 4/15", "epoch 4 of 15", "Epoch [", "45%|", "████▌", "| 45/100 ", "[00:12<00:15, ", "3.61it/s", "1.2s/it",
    ", loss=0.3", "\r", "\n", "\r\n", "\x1b[A", "\x1b[32m", "\x1b[0m", "\b", "120/500 ", "[=====>....]", " - ETA: 1:02",
    " - loss: 0.4123", "━━━", "{'loss': 0.41, 'epoch': 1.5}", '{"loss": nan}', "CUDA out of memory. ", "Tried to allocate 20.00 MiB. ",
    "GPU 0 has a total capacity of 3.68 GiB of which 11.75 MiB is free. ", "Killed", "MemoryError", "45it [00:12, 3.61it/s",
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.sampled_from(_SNIPPETS) | st.text(max_size=12), max_size=40), st.lists(st.integers(0, 4000), max_size=12))
def test_any_chunking_gives_the_same_observations(pieces: list[str], cuts: list[int]) -> None:
    # Without "]" (tqdm), "•" (Rich) or "/step" (Keras 3) no bar can look complete before its
    # terminator, so every observation comes from terminated lines and must not depend on where
    # the pipe cut the stream (rows read on arrival: the fixtures' test above).
    text = "".join(pieces).replace("]", ")").replace("•", "*").replace("/step", "/stp").replace("/sample", "/smp")
    data = text.encode("utf-8", "surrogatepass")
    cuts = [c for c in cuts if c <= len(data)]
    assert parse_all(data, cuts) == parse_all(data)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_real_outputs_chunked_anywhere_give_the_same_observations(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(FIXTURES))
    raw = path.read_bytes()
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=30))
    assert without_early_rows(parse_all(raw, cuts)) == parse_all(raw)


def without_early_rows(obs: list) -> list:
    """``obs`` less the copies of a Rich or Keras 3 row read on arrival, before its metrics came:
    each must be followed at once by the same row, whole, at its terminator."""
    def row(o):
        return (o.format, o.epoch, o.total_epochs, o.step, o.total_steps, o.elapsed_s, o.remaining_s, o.rate_steps_per_s)

    out = []
    for i, o in enumerate(obs):
        early = (isinstance(o, ParsedProgress) and o.format in ("rich", "keras") and o.loss is None and not o.metrics
                 and i + 1 < len(obs) and isinstance(obs[i + 1], ParsedProgress) and row(obs[i + 1]) == row(o))
        if not early:
            out.append(o)
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_line_gives_sane_figures_or_none(line: str) -> None:
    p = parse_line(strip_ansi(line))
    if p is not None:
        for value in (p.step, p.total_steps, p.epoch, p.total_epochs):
            assert value is None or value >= 0
        if p.step is not None and p.total_steps is not None and p.format == "keras":
            assert p.step <= p.total_steps


def test_a_huge_line_without_terminator_is_bounded() -> None:
    parser = OutputParser(max_line_chars=1000)
    for _ in range(200):
        parser.feed("1/1 [" * 100)
    assert len(parser._buf) <= 1000
    parser.feed("\r 10%|#         | 1/10 [00:30<04:30, 30.00s/it]\n")
    assert progress(parser.flush()) == []


def test_oom_message_in_the_stream_is_an_alert() -> None:
    text = (
        "Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 3.68 GiB "
        "of which 11.75 MiB is free. Including non-PyTorch memory, this process has 3.66 GiB memory in use. Of the allocated "
        "memory 3.40 GiB is allocated by PyTorch, and 150.00 MiB is reserved by PyTorch but unallocated. If reserved but "
        "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  "
        "See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)\n"
    )
    alerts = [o for o in parse_all(text.encode()) if isinstance(o, CudaOomAlert)]
    assert len(alerts) == 1 and alerts[0].tried_to_allocate_bytes == 20 * 1024**2


# ---------------------------------------------------------------- captured output of the real trainers


def _replay(name: str):
    """Feed a captured output to a ProgressFeed, one second per line; the snapshots after each line."""
    from cachewatch.engine.training import ProgressFeed

    data = (DATA / name).read_bytes()
    feed = ProgressFeed(started_time=0.0)
    snaps = []
    for i, line in enumerate(data.splitlines(keepends=True)):
        feed.feed_output(line, time_s=1.0 + i)
        snaps.append(feed.snapshot(1.0 + i))
    feed.finish(2.0 + len(snaps), "finished")
    return snaps, feed.snapshot(3.0 + len(snaps))


def test_transformers5_string_numbers_give_epochs_steps_and_loss() -> None:
    snaps, final = _replay("transformers5_trainer_eval.txt")
    known = [s for s in snaps if s.total_epochs]
    assert known and {s.total_epochs for s in known} == {3} and {s.total_steps for s in known} == {10}
    assert [s.epoch for s in known] == sorted(s.epoch for s in known)  # the eval bars never moved it back
    assert final.loss == 0.6928 and final.metrics["eval_loss"] == 0.6926
    assert (final.epoch, final.eta.state) == (3, "finished")


def test_lightning_rich_rows_are_zero_based_with_the_last_index_as_total() -> None:
    snaps, final = _replay("lightning_rich.pty.txt")
    assert {s.total_epochs for s in snaps if s.total_epochs} == {2}  # "Epoch 1/1" is the second of two
    assert (final.epoch, final.total_epochs, final.step, final.total_steps) == (2, 2, 4, 4)


def test_lightning_tqdm_bar_without_total_and_max_epochs_at_the_end() -> None:
    snaps, final = _replay("lightning_tqdm_unknown_total.txt")
    assert all(s.total_steps is None for s in snaps)
    first_total = next(i for i, s in enumerate(snaps) if s.total_epochs)
    assert first_total > 0.9 * len(snaps)  # no total until the closing "`max_epochs=2` reached"
    assert (final.epoch, final.total_epochs) == (2, 2)
    assert final.metrics["val_loss"] > 0


def test_keras_verbose_2_has_no_step_while_an_epoch_runs() -> None:
    snaps, final = _replay("keras3_verbose2.txt")
    # Line 0 "Epoch 1/3", line 1 "10/10 - 1s - ...", line 2 "Epoch 2/3": the step is unknown, not 0.
    assert (snaps[0].epoch, snaps[0].total_epochs, snaps[0].step) == (1, 3, None)
    assert (snaps[1].step, snaps[1].total_steps) == (10, 10)
    assert (snaps[2].epoch, snaps[2].step) == (2, None)
    assert final.epoch == 3 and final.metrics["val_accuracy"] == 0.5625


RICH_ROW = "\r\x1b[2KEpoch 2/4  \x1b[35m━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╺━━━━━━\x1b[0m 25/30 \x1b[2m0:00:02 • 0:00:01\x1b[0m \x1b[2;4m9.47it/s\x1b[0m \x1b[3mtrain_loss: 0.447 val_loss: 0.934\x1b[0m"


def test_a_rich_row_counts_when_it_arrives_not_at_the_next_redraw() -> None:
    # Lightning's Rich bar ends each row with the next frame's "\r", about a second later.
    parser = OutputParser()
    now = progress(parser.feed(RICH_ROW))
    assert [(o.format, o.epoch, o.step, o.total_steps) for o in now] == [("rich", 2, 25, 30)]
    assert now[0].rate_steps_per_s == pytest.approx(9.47)
    assert parser.feed("") == []  # not twice for the same row
    # The metrics may still be cut when the row arrives: they come with the full line at its terminator.
    assert now[0].loss is None and not now[0].metrics
    done = progress(parser.feed("\r"))
    assert [(o.step, o.loss, dict(o.metrics)) for o in done] == [(25, 0.447, {"val_loss": 0.934})]


def test_a_rich_row_cut_before_its_speed_column_waits_for_the_rest() -> None:
    parser = OutputParser()
    cut = RICH_ROW.index("9.47it/s") + len("9.47it/")
    assert progress(parser.feed(RICH_ROW[:cut])) == []
    assert [o.step for o in progress(parser.feed(RICH_ROW[cut:cut + 5]))] == [25]
    cut_in_metrics = progress(OutputParser().feed(RICH_ROW[: RICH_ROW.index("0.447") + 3]))
    assert [(o.step, o.loss) for o in cut_in_metrics] == [(25, None)]  # never a cut "0.4"


KERAS3_ROW = "\r\x1b[1m 5/20\x1b[0m \x1b[32m━━━━━\x1b[0m\x1b[37m━━━━━━━━━━━━━━━\x1b[0m \x1b[1m15:00\x1b[0m 60s/step - accuracy: 0.4375 - loss: 0.9001" + "\b" * 40


def test_a_keras3_row_counts_when_it_arrives_not_at_the_next_step() -> None:
    # Keras 3 (verbose=1, a terminal) ends each row with the next step's "\r": a minute later here.
    parser = OutputParser()
    now = progress(parser.feed(KERAS3_ROW))
    assert [(o.format, o.step, o.total_steps, o.remaining_s) for o in now] == [("keras", 5, 20, 900.0)]
    assert now[0].rate_steps_per_s == pytest.approx(1 / 60)
    assert now[0].loss is None  # the metrics come with the full line
    assert parser.feed("\b") == []  # not twice for the same row
    done = progress(parser.feed("\r"))
    assert [(o.step, o.loss, dict(o.metrics)) for o in done] == [(5, 0.9001, {"accuracy": 0.4375})]
    cut = KERAS3_ROW.index("60s/step") + len("60s/st")
    assert progress(OutputParser().feed(KERAS3_ROW[:cut])) == []  # "60s/st": the speed column is not complete


def test_recorded_keras3_and_rich_outputs_read_the_same_row_by_row_as_whole() -> None:
    # Rows read on arrival add observations, never change what the whole output says.
    for name in ("keras3_fit.pty.txt", "lightning_rich.pty.txt"):
        data = (DATA / name).read_bytes()
        whole = [(o.epoch, o.step, o.total_steps) for o in progress(parse_all(data)) if o.step is not None]
        cuts = [i for i, b in enumerate(data) if b == ord("\r")]  # every row sits unterminated for a while
        chunked = [(o.epoch, o.step, o.total_steps) for o in progress(parse_all(data, cuts)) if o.step is not None]
        assert whole and sorted(set(chunked)) == sorted(set(whole)), name

"""progress.Progress: a live line on a terminal, plain periodic lines elsewhere."""

import io

from progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_redrawn_line_with_rate_and_eta():
    """On a terminal, updates redraw one line (carriage return) with rate and ETA; close ends
    it with a newline and the final count."""
    stream = FakeTerminal()
    progress = Progress("writing", total=10, unit="instances", stream=stream, tty_interval=0)
    progress.update(4)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r\033[K") and "4/10 instances (40%)" in text and "ETA" in text
    assert text.endswith("\n") and "10/10" not in text and "4/10" in text.splitlines()[-1]


def test_plain_stream_gets_full_lines_only_after_interval():
    """Off a terminal, nothing is printed before the interval has passed, and every report is
    a whole line without control characters."""
    stream = io.StringIO()
    progress = Progress("tokenizing", total=100, unit="bytes", stream=stream,
                        plain_interval=3600)
    progress.update(50)
    assert stream.getvalue() == ""
    progress.close()
    assert stream.getvalue() == stream.getvalue().strip() + "\n"
    assert "\r" not in stream.getvalue() and "50/100 bytes (50%)" in stream.getvalue()


def test_detail_is_shown_and_clear_erases_the_live_line():
    """The detail text (training's loss and seq/s) follows the rate; clear() erases the terminal
    line once, for a log line, and the next update draws it again with the last detail; off a
    terminal clear() writes nothing."""
    stream = FakeTerminal()
    progress = Progress("train", total=100, unit="steps", stream=stream, tty_interval=0)
    progress.update(1, "loss 7.5, 3.2 seq/s")
    first = stream.getvalue()
    assert "train: 1/100 steps (1%)" in first and ", loss 7.5, 3.2 seq/s, " in first
    progress.clear()
    progress.clear()
    assert stream.getvalue() == first + "\r\033[K"
    progress.update(1)
    redrawn = stream.getvalue()[len(first) + len("\r\033[K"):]
    assert redrawn.startswith("\r\033[Ktrain: 2/100 steps") and "loss 7.5" in redrawn
    plain = io.StringIO()
    quiet = Progress("train", total=100, unit="steps", stream=plain, plain_interval=3600)
    quiet.update(1, "loss 7.5")
    quiet.clear()
    assert plain.getvalue() == ""

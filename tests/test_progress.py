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

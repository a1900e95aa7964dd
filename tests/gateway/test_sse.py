import pytest

from thinkwatch.lib.sse import EventSplitter, data_of

EVENTS = [b'data: {"a":1}\n\n', b"event: ping\ndata: {}\n\n", b"data: [DONE]\n\n"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_it_reassembles_events_split_anywhere(size: int) -> None:
    raw = b"".join(EVENTS)
    splitter = EventSplitter()

    out = [e for i in range(0, len(raw), size) for e in splitter.feed(raw[i : i + size])]

    assert out == EVENTS


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_it_understands_crlf_separators(size: int) -> None:
    raw = b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    splitter = EventSplitter()

    out = [e for i in range(0, len(raw), size) for e in splitter.feed(raw[i : i + size])]

    assert out == [b'data: {"a":1}\r\n\r\n', b"data: [DONE]\r\n\r\n"]


def test_it_keeps_an_unterminated_tail() -> None:
    splitter = EventSplitter()

    assert splitter.feed(b"data: 1\n\ndata: 2") == [b"data: 1\n\n"]
    assert splitter.rest() == b"data: 2"


def test_it_reads_the_data_field() -> None:
    assert data_of(b"event: x\ndata: hello\n\n") == b"hello"
    assert data_of(b"data: a\ndata: b\n\n") == b"a\nb"

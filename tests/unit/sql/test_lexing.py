import pytest

from jitgate.sql.lexing import has_escapable_backslash


@pytest.mark.parametrize(("text", "expected"), [
    ("SELECT 1", False),
    ("SELECT 'C:\\path'", True),
    ("SELECT 'x\\' , ' ; DROP TABLE t; -- '", True),
    ("SELECT n'a\\b'", True),
    ("SELECT E'a\\'b'", False),
    ("SELECT $$a\\b$$", False),
    ("SELECT 1 -- a \\ comment", False),
    ('SELECT 1 AS "a\\b"', False),
    ("SELECT 'é\\'", True),
    ("SELECT 'unterminated \\", True),
])  # fmt: skip
def test_backslashes_that_standard_conforming_strings_changes(text: str, expected: bool) -> None:
    assert has_escapable_backslash(text) is expected

"""Counting a JSON body's top-level array before the body is parsed."""

from __future__ import annotations

from mailsched.producer.limits import TooLarge, check_item_count


def test_the_count_reads_json_as_json() -> None:
    def refused(text: str) -> bool:
        try:
            check_item_count(text.encode(), "recipients", 2)
        except TooLarge:
            return True
        return False

    assert refused(' { "a" : [ 1 , { } ] ,\n "recipients" : [ "x" , [ 1 , 2 ] , { "r" : 1 } ] } ')
    assert refused('{"recip\\u0069ents": [1, 2, 3]}')
    assert refused('{"recipients": [1, 2, 3], "recipients": []}')
    assert not refused('{"recipients": [1, 2]}')
    # Plain strings are counted by their quotes: commas, escapes and spaces do not fool it.
    assert not refused('{"recipients": ["a,b", "c,d"]}')
    assert not refused('{"recipients": ["a\\"b", "c"]}')
    assert refused('{"recipients": ["a\\"b", "c" ,\n"d"]}')
    assert refused('{"recipients": ["a,b" , "c,d", {"email": "e"}]}')
    assert refused('{"recipients": [{"email": "e"}, "a" ,"b"]}')
    assert not refused('{"recipients": ["a", "b"], "body": ["c", "d", "e"]}')
    assert not refused('{"recipients": [[1, 2, 3]]}')
    assert not refused('{"body": "\\"recipients\\": [1, 2, 3]"}')
    assert not refused('[{"recipients": [1, 2, 3]}]')
    # Malformed: the parser says so, unless the count is over first.
    assert not refused('{"recipients": [1, 2')
    assert not refused('{"recipients": [1 2 3]}')
    assert refused('{"recipients": [1, 2, 3, 4')

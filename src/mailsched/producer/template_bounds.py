"""An upper bound of what a body template can render to, found without rendering it.

A campaign's bodies must render within ``MAILSCHED_MAX_BODY_BYTES`` for every
recipient. Rendering a 2 kB body costs about 10 µs, a second for 100,000
recipients, while reading the template once tells that most bodies cannot come
near the limit: the text between the tags is fixed, and an expression writes out
at most what the sandbox lets a value be. Only a body this bound does not settle
is rendered per recipient.
"""

from __future__ import annotations

from jinja2 import nodes

from mailsched.mail.sandbox import MAX_TEXT

#: The longest value a recipient gives: a var (1,000 characters) is the longest of
#: ``vars``, ``name`` (200) and ``email`` (320); a number prints shorter.
VALUE_CHARS = 1000

#: How many characters a filter may write per character it is given: upper and title
#: can triple a character ("ﬃ" is "FFI"), escaping makes "&#34;" of '"'.
_GROWTH = {
    "capitalize": 3,
    "d": 1,
    "default": 1,
    "e": 5,
    "escape": 5,
    "first": 1,
    "forceescape": 5,
    "last": 1,
    "lower": 3,
    "string": 1,
    "striptags": 1,
    "title": 3,
    "trim": 1,
    "truncate": 1,
    "upper": 3,
}
#: Filters whose result is a number: a bounded value prints as no more digits.
_NUMBERS = frozenset({"abs", "count", "float", "int", "length", "round", "wordcount"})


def _filtered(node: nodes.Filter) -> int | None:
    """At most how many characters a filter of a known growth writes out, else None."""
    # Everything given may come out: default's default_value is a keyword argument.
    given = sum(_chars(child) for child in node.iter_child_nodes())
    if node.name in _GROWTH:
        return _GROWTH[node.name] * given
    if node.name in _NUMBERS:
        return max(given, 32)
    return None


def _chars(node: nodes.Node) -> int:
    """At most how many characters ``node`` writes out."""
    if isinstance(node, nodes.Name):
        return VALUE_CHARS
    if isinstance(node, nodes.Const):
        return len(str(node.value))
    if isinstance(node, nodes.Keyword):
        return _chars(node.value)
    filtered = _filtered(node) if isinstance(node, nodes.Filter) and node.node is not None else None
    if filtered is not None:
        return filtered
    if isinstance(node, nodes.Mul):
        # 'text' * 3: a repetition by a literal count is as long as its parts times it.
        for part, times in ((node.left, node.right), (node.right, node.left)):
            if isinstance(times, nodes.Const) and type(times.value) is int:
                return max(_chars(part) * max(times.value, 1), 32)
    if isinstance(node, nodes.Concat | nodes.Add | nodes.And | nodes.Or | nodes.CondExpr):
        # All the operands, or one of them (a test is no operand; counting it is harmless);
        # a sum of floats may print longer than its operands (0.1 + 0.2), never over 32.
        return max(sum(_chars(child) for child in node.iter_child_nodes()), 32)
    # Any other value is one the sandbox made, at most MAX_TEXT, or passed through a
    # literal of the template.
    literals = sum(len(c.value) for c in node.find_all(nodes.Const) if isinstance(c.value, str))
    return MAX_TEXT + literals


def body_bytes_bound(tree: nodes.Template, *, html: bool) -> int:
    """At most how many bytes of UTF-8 ``tree`` renders to, for any recipient.

    Both branches of every ``if`` count; a ``{% filter %}`` block counts its content
    and its result. In HTML every value may be escaped, "&#39;" for "'".
    """
    per_char = 5 if html else 4
    total = 0
    for output in tree.find_all(nodes.Output):
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                total += len(child.data.encode("utf-8", "replace"))
            else:
                total += per_char * _chars(child)
    blocks = sum(1 for _ in tree.find_all(nodes.FilterBlock))
    return total + blocks * per_char * MAX_TEXT


__all__ = ["VALUE_CHARS", "body_bytes_bound"]

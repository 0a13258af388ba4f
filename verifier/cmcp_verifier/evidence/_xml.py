"""A small, safe XML tree with the namespace details canonicalization needs, and inclusive
Canonical XML 1.0 / 1.1 (W3C, without comments) over it.

``xml.etree`` forgets namespace prefixes and where declarations sit, and the standard library
only implements C14N 2.0, whose output differs (it drops unused declarations), so signed
XML (XML-DSig) needs this. The parser is expat without DTDs: a document type declaration
or entity declaration is rejected, so no entity expansion or external fetch can happen.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import InputError

XML_NS = "http://www.w3.org/XML/1998/namespace"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_11 = "http://www.w3.org/2006/12/xml-c14n11"
MAX_XML_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64


@dataclass(eq=False)
class PI:
    """A processing instruction."""

    target: str
    data: str


@dataclass(eq=False)
class Element:
    """An element with its raw (prefixed) name, attributes and in-scope namespaces."""

    qname: str
    attrs: list[tuple[str, str]]  # (qname, value) in document order, xmlns* excluded
    declared: dict[str, str]  # namespace declarations on this element ('' = default)
    scope: dict[str, str]  # in-scope namespaces: prefix -> URI ('' = default, '' URI = none)
    parent: Element | None = None
    children: list[Element | str | PI] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.qname.partition(":")[0] if ":" in self.qname else ""

    @property
    def local(self) -> str:
        return self.qname.rpartition(":")[2]

    @property
    def namespace(self) -> str:
        return self.scope.get(self.prefix, "")

    def is_(self, namespace: str, local: str) -> bool:
        return self.namespace == namespace and self.local == local

    def elements(self) -> list[Element]:
        return [c for c in self.children if isinstance(c, Element)]

    def iter(self) -> Iterator[Element]:
        """This element and all its descendants, in document order."""
        yield self
        for child in self.elements():
            yield from child.iter()

    def text(self) -> str:
        return "".join(c for c in self.children if isinstance(c, str))

    def attr_namespace(self, qname: str) -> str:
        if ":" not in qname:
            return ""
        prefix = qname.partition(":")[0]
        return XML_NS if prefix == "xml" else self.scope.get(prefix, "")

    def get(self, local: str, namespace: str = "") -> str | None:
        """The value of the attribute ``{namespace}local``."""
        for name, value in self.attrs:
            if name.rpartition(":")[2] == local and self.attr_namespace(name) == namespace:
                return value
        return None


@dataclass(eq=False)
class Document:
    root: Element
    before: list[PI]  # processing instructions before the root element
    after: list[PI]


def _bad(detail: str) -> InputError:
    return InputError(f"XML document: {detail}", code="xml.malformed")


class _Builder:
    def __init__(self) -> None:
        self.stack: list[Element] = []
        self.root: Element | None = None
        self.before: list[PI] = []
        self.after: list[PI] = []

    def start(self, name: str, flat: list[str]) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise _bad(f"nested deeper than {MAX_DEPTH}")
        parent = self.stack[-1] if self.stack else None
        declared: dict[str, str] = {}
        attrs: list[tuple[str, str]] = []
        for qname, value in zip(flat[::2], flat[1::2], strict=True):
            if qname == "xmlns":
                declared[""] = value
            elif qname.startswith("xmlns:"):
                if not value:
                    raise _bad(f"{qname}='' undeclares a prefix (XML 1.1 only)")
                declared[qname[6:]] = value
            else:
                attrs.append((qname, value))
        scope = dict(parent.scope) if parent else {}
        scope.update(declared)
        element = Element(name, attrs, declared, scope, parent)
        for qname in [name, *(a for a, _ in attrs)]:
            prefix = qname.partition(":")[0] if ":" in qname else None
            if prefix not in (None, "xml") and prefix not in scope:
                raise _bad(f"prefix {prefix!r} of {qname!r} is not declared")
        if parent is None:
            if self.root is not None:
                raise _bad("more than one root element")
            self.root = element
        else:
            parent.children.append(element)
        self.stack.append(element)

    def end(self, name: str) -> None:
        self.stack.pop()

    def text(self, data: str) -> None:
        if not self.stack:
            return  # whitespace outside the root element is not part of the document
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)

    def pi(self, target: str, data: str) -> None:
        node = PI(target, data)
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            (self.after if self.root is not None else self.before).append(node)


def _refuse_dtd(*_: object) -> None:
    raise _bad("document type and entity declarations are not accepted")


def parse_xml(data: bytes) -> Document:
    """Parse ``data``; raise :class:`InputError` for anything malformed or unsafe."""
    if len(data) > MAX_XML_BYTES:
        raise _bad(f"larger than {MAX_XML_BYTES} bytes")
    builder = _Builder()
    parser = xml.parsers.expat.ParserCreate()
    parser.ordered_attributes = True
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text
    parser.ProcessingInstructionHandler = builder.pi
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    try:
        parser.Parse(data, True)
    except (xml.parsers.expat.ExpatError, ValueError) as exc:
        raise _bad(str(exc)) from None
    except RecursionError:
        raise _bad("nested too deeply") from None
    if builder.root is None:
        raise _bad("no root element")
    return Document(builder.root, builder.before, builder.after)


def _escape_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")


def _escape_attr(s: str) -> str:
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace('"', "&quot;")
        .replace("\t", "&#x9;")
        .replace("\n", "&#xA;")
        .replace("\r", "&#xD;")
    )


def _pi(node: PI) -> str:
    return f"<?{node.target}{' ' + node.data if node.data else ''}?>"


class _Canonicalizer:
    def __init__(self, exclude: Element | None) -> None:
        self.exclude = exclude
        self.out: list[str] = []

    def element(
        self, e: Element, rendered: dict[str, str], extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        if e is self.exclude:
            return
        ns_nodes = {p: u for p, u in e.scope.items() if p != "xml" and (p or u)}
        decls = [(p, u) for p, u in ns_nodes.items() if rendered.get(p) != u]
        if "" not in ns_nodes and rendered.get(""):
            decls.append(("", ""))  # undeclare an inherited default namespace
        decls.sort(key=lambda d: d[0])
        attrs = sorted(
            [*e.attrs, *extra], key=lambda a: (e.attr_namespace(a[0]), a[0].rpartition(":")[2])
        )
        self.out.append("<" + e.qname)
        for p, u in decls:
            self.out.append(f' xmlns{":" + p if p else ""}="{_escape_attr(u)}"')
        for name, value in attrs:
            self.out.append(f' {name}="{_escape_attr(value)}"')
        self.out.append(">")
        for child in e.children:
            if isinstance(child, Element):
                self.element(child, ns_nodes)
            elif isinstance(child, PI):
                self.out.append(_pi(child))
            else:
                self.out.append(_escape_text(child))
        self.out.append(f"</{e.qname}>")


def canonicalize_document(doc: Document, *, exclude: Element | None = None) -> bytes:
    """C14N (1.0 or 1.1: identical here) of the whole document, minus ``exclude``'s subtree."""
    c = _Canonicalizer(exclude)
    c.out.extend(_pi(p) + "\n" for p in doc.before)
    c.element(doc.root, {})
    c.out.extend("\n" + _pi(p) for p in doc.after)
    return "".join(c.out).encode("utf-8")


def canonicalize_subtree(e: Element, algorithm: str) -> bytes:
    """C14N of the document subset rooted at ``e`` (e.g. XML-DSig SignedInfo).

    All in-scope namespaces are rendered on ``e``; ``xml:*`` attributes of its ancestors are
    inherited as each version says (1.1: xml:lang and xml:space only; xml:base needs fix-up,
    which is refused rather than approximated).
    """
    if algorithm not in (C14N_10, C14N_11):
        raise InputError(f"unsupported canonicalization {algorithm}", code="xml.c14n")
    own = {name for name, _ in e.attrs if name.startswith("xml:")}
    inherited: dict[str, str] = {}
    node = e.parent
    while node is not None:
        for name, value in node.attrs:
            if name.startswith("xml:") and name not in own:
                inherited.setdefault(name, value)
        node = node.parent
    if algorithm == C14N_11:
        if "xml:base" in inherited:
            raise InputError("xml:base fix-up (C14N 1.1) is not supported", code="xml.c14n")
        inherited.pop("xml:id", None)
    c = _Canonicalizer(None)
    c.element(e, {}, sorted(inherited.items()))
    return "".join(c.out).encode("utf-8")

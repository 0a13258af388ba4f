"""Canonical XML 1.0/1.1 (inclusive, without comments) against the W3C recommendation's own
examples (section 3; the DTD-dependent parts left out, since DTDs are refused)."""

from __future__ import annotations

import pytest

from cmcp_verifier.errors import InputError
from cmcp_verifier.evidence._xml import (
    C14N_10,
    C14N_11,
    canonicalize_document,
    canonicalize_subtree,
    parse_xml,
)

# C14N 1.0 §3.1 (PIs, comments, outside of the document element), DOCTYPE removed.
PIS_IN = b"""<?xml version="1.0"?>

<?xml-stylesheet   href="doc.xsl"
   type="text/xsl"   ?>

<doc>Hello, world!<!-- Comment 1 --></doc>

<?pi-without-data     ?>

<!-- Comment 2 -->

<!-- Comment 3 -->
"""
PIS_OUT = b"""<?xml-stylesheet href="doc.xsl"
   type="text/xsl"   ?>
<doc>Hello, world!</doc>
<?pi-without-data?>"""

# §3.3 (start and end tags, namespaces, attribute order); e9's DTD default attribute omitted.
TAGS_IN = b"""<doc>
   <e1   />
   <e2   ></e2>
   <e3   name = "elem3"   id="elem3"   />
   <e4   name="elem4"   id="elem4"   ></e4>
   <e5 a:attr="out" b:attr="sorted" attr2="all" attr="I'm"
      xmlns:b="http://www.ietf.org"
      xmlns:a="http://www.w3.org"
      xmlns="http://example.org"/>
   <e6 xmlns="" xmlns:a="http://www.w3.org">
      <e7 xmlns="http://www.ietf.org">
         <e8 xmlns="" xmlns:a="http://www.w3.org">
            <e9 xmlns="" xmlns:a="http://www.ietf.org"/>
         </e8>
      </e7>
   </e6>
</doc>"""
TAGS_OUT = b"""<doc>
   <e1></e1>
   <e2></e2>
   <e3 id="elem3" name="elem3"></e3>
   <e4 id="elem4" name="elem4"></e4>
   <e5 xmlns="http://example.org" xmlns:a="http://www.w3.org" xmlns:b="http://www.ietf.org" \
attr="I'm" attr2="all" b:attr="sorted" a:attr="out"></e5>
   <e6 xmlns:a="http://www.w3.org">
      <e7 xmlns="http://www.ietf.org">
         <e8 xmlns="">
            <e9 xmlns:a="http://www.ietf.org"></e9>
         </e8>
      </e7>
   </e6>
</doc>"""

# §3.4 (character modifications and references); without the DTD all attributes are CDATA.
CHARS_IN = b"""<doc>
   <text>First line&#x0d;&#10;Second line</text>
   <value>&#x32;</value>
   <compute><![CDATA[value>"0" && value<"10" ?"valid":"error"]]></compute>
   <compute expr='value>"0" &amp;&amp; value&lt;"10" ?"valid":"error"'>valid</compute>
   <norm attr=' &apos;   &#x20;&#13;&#xa;&#9;   &apos; '/>
   <normNames attr='   A   &#x20;&#13;&#xa;&#9;   B   '/>
</doc>"""
CHARS_OUT = b"""<doc>
   <text>First line&#xD;
Second line</text>
   <value>2</value>
   <compute>value&gt;"0" &amp;&amp; value&lt;"10" ?"valid":"error"</compute>
   <compute expr="value>&quot;0&quot; &amp;&amp; value&lt;&quot;10&quot; \
?&quot;valid&quot;:&quot;error&quot;">valid</compute>
   <norm attr=" '    &#xD;&#xA;&#x9;   ' "></norm>
   <normNames attr="   A    &#xD;&#xA;&#x9;   B   "></normNames>
</doc>"""


@pytest.mark.parametrize(
    ("given", "canonical"),
    [(PIS_IN, PIS_OUT), (TAGS_IN, TAGS_OUT), (CHARS_IN, CHARS_OUT)],
    ids=["pis-and-comments", "tags-and-namespaces", "characters"],
)
def test_w3c_examples(given: bytes, canonical: bytes) -> None:
    assert canonicalize_document(parse_xml(given)) == canonical


def test_crlf_is_normalized() -> None:
    assert canonicalize_document(parse_xml(b"<a>x\r\ny</a>")) == b"<a>x\ny</a>"


def test_subtree_renders_inherited_namespaces_and_xml_attributes() -> None:
    doc = parse_xml(
        b'<r xmlns="urn:d" xmlns:p="urn:p" xml:lang="en" xml:id="i"><p:s a="1"><t/></p:s></r>'
    )
    s = doc.root.elements()[0]
    assert canonicalize_subtree(s, C14N_11) == (
        b'<p:s xmlns="urn:d" xmlns:p="urn:p" a="1" xml:lang="en"><t></t></p:s>'
    )
    assert canonicalize_subtree(s, C14N_10) == (
        b'<p:s xmlns="urn:d" xmlns:p="urn:p" a="1" xml:id="i" xml:lang="en"><t></t></p:s>'
    )


def test_xml_base_fixup_is_refused_not_approximated() -> None:
    doc = parse_xml(b'<r xml:base="http://a/"><s/></r>')
    with pytest.raises(InputError, match="xml:base"):
        canonicalize_subtree(doc.root.elements()[0], C14N_11)


def test_excluded_subtree_is_left_out() -> None:
    doc = parse_xml(b"<r>a<s>b</s>c</r>")
    assert canonicalize_document(doc, exclude=doc.root.elements()[0]) == b"<r>ac</r>"


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b'<!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>', "not accepted"),
        (b"<!DOCTYPE r SYSTEM 'file:///etc/passwd'><r/>", "not accepted"),
        (b"<r><p:s/></r>", "not declared"),
        (b"<r>", "no element found"),
        (b"", "no element found"),
        (b"<a/><b/>", "junk"),
        (b"<r xmlns:p=''/>", "undeclares"),
        (b"<a>" * 100 + b"</a>" * 100, "nested deeper"),
        (b"<r>\xff</r>", "not well-formed"),
    ],
)
def test_bad_or_unsafe_xml_is_refused(xml: bytes, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        parse_xml(xml)

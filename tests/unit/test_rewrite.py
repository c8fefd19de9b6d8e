"""HTML rewriting for POST /v1/rewrite: links wrapped, pixel and honeypot added,
unsubscribe markers replaced, and every other byte of the input kept."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.domain.rewrite import HONEYPOT, PIXEL, rewrite

BASE = "https://r.example"
PREFIXES = tuple(f"{BASE}/{k}/" for k in "couhs")


class FakeLink:
    """Records calls; makes `https://r.example/{c,o,u,h}/{quoted url}`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, kind: str, url: str | None) -> str:
        self.calls.append((kind, url))
        return made(kind, url)


def made(kind: str, url: str | None) -> str:
    return f"{BASE}/{kind[0]}/{quote(url or '', safe='')}"


PIX = PIXEL.format(made("open", None))
POT = HONEYPOT.format(made("honeypot", None))


def run(html: str) -> tuple[str, str | None, list[tuple[str, str | None]]]:
    link = FakeLink()
    result = rewrite(html, link, PREFIXES)
    return result.html, result.list_unsubscribe, link.calls


def clicks(calls: list[tuple[str, str | None]]) -> list[str | None]:
    return [url for kind, url in calls if kind == "click"]


NEWSLETTER = """\
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<title>Spring news &amp; offers</title>
<style type="text/css">
  a[href^="http"] { color: #0645ad; } /* <a href="https://in.style/">  ##unsubscribetag## */
  @media only screen and (max-width:600px) { .col { width:100% !important; } }
</style>
<link rel="stylesheet" href="https://fonts.example/css?family=Open+Sans" />
</head>
<BODY style="margin:0;padding:0" bgcolor="#f4f4f4">
<!--[if mso]><table><tr><td><![endif]-->
<!-- preheader <a href="https://in.comment/"> -->
<table width="100%" cellpadding="0" cellspacing="0" border="0">
  <tr>
    <td class="col" align="center">
      <A HREF=http://shop.example/spring?utm_source=mail&amp;utm_medium=email TARGET=_blank>Shop&nbsp;now</A>
      <a href='https://blog.example/post/1' class="btn" >Read more</a>
      <a class=cta href = "HTTPS://Example.COM/Path?a=1&amp;b=&quot;x&quot;" >Go</a>
      <img src="https://cdn.example/hero.png" alt="Spring &amp; stuff" width=600>
      <map name="m"><AREA shape="rect" coords="0,0,10,10" href="https://map.example/area"></map>
    </td>
  </tr>
  <tr><td>
    <a href="mailto:help@shop.example?subject=Hi&amp;body=x">Mail us</a> |
    <a href="tel:+15551234567">Call</a> | <a href="#top">Top</a> |
    <a href="/account">Account</a> | <a href="javascript:void(0)">JS</a> |
    <a href="https://r.example/c/already-signed">Tracked</a>
  </td></tr>
  <tr><td style="font-size:11px">
    &copy; 2024 Shop &#169; &#xA9; &mdash; 1 &lt; 2
    <a href="##UnsubscribeTag##https://shop.example/prefs?u=1&amp;l=2">Unsubscribe</a>
  </td></tr>
</table>
<script type="text/javascript">if (a < b && c) { x = "<a href='https://in.script/'>"; }</script>
</BODY>
</html>
"""


def test_newsletter_links_are_wrapped_in_place_and_all_else_kept():
    out, unsub, calls = run(NEWSLETTER)
    wrapped = {
        "http://shop.example/spring?utm_source=mail&amp;utm_medium=email": (
            "http://shop.example/spring?utm_source=mail&utm_medium=email"
        ),
        "https://blog.example/post/1": "https://blog.example/post/1",
        "HTTPS://Example.COM/Path?a=1&amp;b=&quot;x&quot;": 'HTTPS://Example.COM/Path?a=1&b="x"',
        "https://map.example/area": "https://map.example/area",
    }
    expected = NEWSLETTER
    for raw, url in wrapped.items():
        expected = expected.replace(f"HREF={raw} ", f"HREF={made('click', url)} ")
        expected = expected.replace(f"href='{raw}'", f"href='{made('click', url)}'")
        expected = expected.replace(f'href = "{raw}"', f'href = "{made("click", url)}"')
        expected = expected.replace(f'href="{raw}"', f'href="{made("click", url)}"')
    landing = "https://shop.example/prefs?u=1&l=2"
    expected = expected.replace(
        "##UnsubscribeTag##https://shop.example/prefs?u=1&amp;l=2", made("unsub", landing)
    )
    body = '<BODY style="margin:0;padding:0" bgcolor="#f4f4f4">'
    expected = expected.replace(body, body + POT).replace("</BODY>", PIX + "</BODY>")
    assert out == expected
    assert clicks(calls) == list(wrapped.values())
    assert calls[0] == ("honeypot", None)
    assert calls[-2:] == [("unsub", landing), ("open", None)]
    assert unsub == made("unsub", landing)


def test_a_document_without_links_only_gains_the_pixel_and_honeypot():
    html = (
        "<!doctype html>\r\n<HTML>\r\n<Body Class='a' data-x=\"1>2\">\r\n"
        "<P ALIGN=center>caf&eacute; &nbsp; &#169; &#x263A; &amp &bogus; a < b > c</P>\r\n"
        "<!-- a comment --><?php echo 1 ?><![CDATA[ x ]]>\r\n"
        "<img src=https://cdn.example/a.png alt='it&#39;s'><br/>\r\n"
        "<a name=top>anchor</a><a href>empty</a><A HREF=''>blank</A>\r\n"
        "</bOdY>\r\n</HTML>"
    )
    out, unsub, calls = run(html)
    body = "<Body Class='a' data-x=\"1>2\">"
    assert out == html.replace(body, body + POT).replace("</bOdY>", PIX + "</bOdY>")
    assert calls == [("honeypot", None), ("open", None)]
    assert unsub is None


@pytest.mark.parametrize(
    "href",
    [
        "mailto:a@b.example",
        "MAILTO:a@b.example",
        "tel:+1555",
        "#top",
        "#",
        "/relative/path?a=1&amp;b=2",
        "relative.html",
        "//cdn.example/protocol-relative",
        "javascript:alert(1)",
        " javascript:void(0) ",
        "ftp://files.example/x",
        "data:text/html,hi",
        "http://",
        "https:/one-slash.example",
        "",
        "https://r.example/c/signed-token",
        "https://r.example/o/signed-token",
        "https://r.example/u/signed?x=1&amp;y=2",
        " https://r.example/s/signed",
    ],
)
def test_hrefs_left_alone(href):
    for html in (f'<a href="{href}">x</a>', f"<area href='{href}'>", f"<A HREF={href or 'x'}>"):
        out, _, calls = run(html)
        assert out == POT + html + PIX
        assert clicks(calls) == []


@pytest.mark.parametrize(
    "attr, url, written",
    [
        ('href="https://a.example/"', "https://a.example/", 'href="{}"'),
        ("href='https://a.example/'", "https://a.example/", "href='{}'"),
        ("href=https://a.example/", "https://a.example/", "href={}"),
        ('HREF = "http://a.example/"', "http://a.example/", 'HREF = "{}"'),
        ('href="  https://a.example/x \n"', "https://a.example/x", 'href="{}"'),
        ('href="Https://A.example/?q=1&amp;r=2"', "Https://A.example/?q=1&r=2", 'href="{}"'),
        ('href="https://a.example/?q=&#34;&#x27;&lt;"', "https://a.example/?q=\"'<", 'href="{}"'),
        ('href="https://a.exa\nmple/"', "https://a.example/", 'href="{}"'),  # as a browser reads it
    ],
)
def test_http_hrefs_become_click_links(attr, url, written):
    out, _, calls = run(f'<p><a class="x" {attr} title="t">go</a></p>')
    assert (
        out
        == POT + f'<p><a class="x" {written.format(made("click", url))} title="t">go</a></p>' + PIX
    )
    assert clicks(calls) == [url]


def test_area_and_self_closing_links_are_wrapped_but_not_other_tags():
    html = (
        '<area href="https://a.example/"><a href="https://b.example/"/>'
        '<link href="https://c.example/"><base href="https://d.example/">'
        '<img src="https://e.example/"><form action="https://f.example/"></form>'
    )
    out, _, calls = run(html)
    assert clicks(calls) == ["https://a.example/", "https://b.example/"]
    assert out.count(f"{BASE}/c/") == 2
    assert "https://c.example/" in out and "https://f.example/" in out


def test_tracking_urls_are_written_back_escaped():
    def link(kind: str, url: str | None) -> str:
        return f"https://r.example/{kind}?u={url}&n=\"'"

    html = "<a href=\"https://a.example/?x=1&amp;y=2\">a</a><a href='https://b.example/'>b</a>"
    html += "<a href=https://c.example/>c</a>"
    out = rewrite(html, link, ()).html
    assert (
        '<a href="https://r.example/click?u=https://a.example/?x=1&amp;y=2&amp;n=&quot;&#x27;">'
        in out
    )
    assert "<a href='https://r.example/click?u=https://b.example/&amp;n=&quot;&#x27;'>" in out
    # An unquoted value that now needs quotes gets them.
    assert '<a href="https://r.example/click?u=https://c.example/&amp;n=&quot;&#x27;">' in out


def test_a_click_link_returned_unchanged_leaves_the_href_exactly_alone():
    html = '<a href=" https://a.example/?x=1&amp;y=2 ">a</a>'
    out = rewrite(html, lambda kind, url: url if kind == "click" else "https://r/x", ()).html
    assert html in out


def test_unsubscribe_marker_in_href():
    html = (
        '<a href="##unsubscribetag##">one</a>'
        "<a href='##UNSUBSCRIBETAG##https://land.example/?a=1&amp;b=2'>two</a>"
        '<a href=" ##unsubscribetag##  /relative ">three</a>'
    )
    out, unsub, calls = run(html)
    assert [c for c in calls if c[0] == "unsub"] == [
        ("unsub", None),
        ("unsub", "https://land.example/?a=1&b=2"),
        ("unsub", None),  # a landing page that is not http(s) is dropped
    ]
    assert (
        out
        == POT
        + (
            f'<a href="{made("unsub", None)}">one</a>'
            f"<a href='{made('unsub', 'https://land.example/?a=1&b=2')}'>two</a>"
            f'<a href="{made("unsub", None)}">three</a>'
        )
        + PIX
    )
    assert unsub == made("unsub", None)


def test_unsubscribe_marker_in_text():
    html = (
        "<p>Unsubscribe: ##unsubscribetag##</p>\n"
        "<p>Or visit ##UnSubscribeTag##https://land.example/?a=1&amp;b=2.</p>\n"
        "<td>##unsubscribetag##https://x.example/</td>\n"
        "<p>tag##unsubscribetag##then text</p>"
    )
    out, unsub, calls = run(html)
    landing = "https://land.example/?a=1&b=2"
    assert (
        out
        == POT
        + (
            f"<p>Unsubscribe: {made('unsub', None)}</p>\n"
            f"<p>Or visit {made('unsub', landing)}.</p>\n"
            f"<td>{made('unsub', 'https://x.example/')}</td>\n"
            f"<p>tag{made('unsub', None)}then text</p>"
        )
        + PIX
    )
    assert unsub == made("unsub", None)
    assert [url for kind, url in calls if kind == "unsub"] == [
        None,
        landing,
        "https://x.example/",
        None,
    ]


def test_first_unsubscribe_url_is_list_unsubscribe():
    _, unsub, _ = run(
        '<p>##unsubscribetag##https://a.example/</p><a href="##unsubscribetag##">x</a>'
    )
    assert unsub == made("unsub", "https://a.example/")


def test_markers_outside_text_and_href_are_left_alone():
    html = (
        "<!-- ##unsubscribetag## --><script>var u = '##unsubscribetag##';</script>"
        '<style>/* ##unsubscribetag## */</style><a title="##unsubscribetag##" href="#">x</a>'
        '<a href="https://a.example/?u=##unsubscribetag##">y</a>'
    )
    out, unsub, calls = run(html)
    assert unsub is None
    assert [kind for kind, _ in calls] == ["honeypot", "click", "open"]
    assert out.count("##unsubscribetag##") == 4  # the one in the click URL is now quoted


@pytest.mark.parametrize(
    "html, at",
    [
        ("<html><body><p>x</p></body></html>", "</body>"),
        ("<html><BODY><p>x</p></BODY ></html>", "</BODY >"),
        ("<body>a</body>b</body>c", "</body>c"),  # the last one
        ("<body>a<!-- </body> -->b</body>", "</body>"),
        ("<body><script>document.write('</body>')</script></body>", "</body>"),
    ],
)
def test_pixel_goes_before_the_last_body_end_tag(html, at):
    out, _, calls = run(html)
    i = html.rindex(at)
    assert out.replace(POT, "") == html[:i] + PIX + html[i:]
    assert calls[-1] == ("open", None)


@pytest.mark.parametrize(
    "html, at",
    [
        ("<p>no body</p>", 14),
        ("", 0),
        ("<p>x</p><!-- never closed", 8),  # HTML5: the comment swallows the rest
        ("<p>x</p><a href='never closed", 8),
        ("<p>x</p><script>never closed", 8),
    ],
)
def test_pixel_without_body_end_goes_at_the_end_of_the_content(html, at):
    out, _, _ = run(html)
    assert out == POT + html[:at] + PIX + html[at:]


@pytest.mark.parametrize(
    "html, at",
    [
        ('<html><head></head><body class="a">x</body></html>', '<body class="a">'),
        ("<HTML><BODY\nSTYLE='a:b'>x</BODY></HTML>", "<BODY\nSTYLE='a:b'>"),
        ("<body>a</body><body>b</body>", "<body>"),  # the first one
        ("<!DOCTYPE html>\n<p>x</p>", "<!DOCTYPE html>"),  # not before the doctype
        ("\ufeff <!doctype html><p>x</p>", "<!doctype html>"),
        ("<p>x</p><!doctype html>", ""),
    ],
)
def test_honeypot_goes_right_after_the_body_start_tag(html, at):
    out, _, calls = run(html)
    i = html.index(at) + len(at)
    assert out.replace(PIX, "") == html[:i] + POT + html[i:]
    assert calls[0] == ("honeypot", None)


def test_honeypot_is_hidden_from_people():
    assert 'style="display:none!important"' in POT and 'aria-hidden="true"' in POT
    assert 'tabindex="-1"' in POT and POT.endswith("></a>")


@pytest.mark.parametrize(
    "html",
    [
        "<a href='https://a.example/'",
        '<a href="https://a.example/>x',
        "<<<a>>>",
        "<a href=https://a.example/ <b>",
        "</",
        "<![ <a href=https://a.example/>x</a>",
        "<!x",
        "&#",
        "&#x;&#z<a href=https://a.example/>",
        "<p>\x00\ud800</p>",
        "<a href='https://a.example/' href=\"https://b.example/\">",
        '<a href=="https://a.example/">',
    ],
)
def test_malformed_input_never_raises(html):
    out, _, calls = run(html)
    assert out.count(PIX) == 1 and out.count(POT) == 1
    assert [c[0] for c in calls if c[0] in ("open", "honeypot")] == ["honeypot", "open"]


def test_text_after_stray_charref_starts_is_still_tokenized():
    # Python 3.11's close() would read everything after the second "&#z" as text.
    html = (
        "a &#z; b\n<a href=https://a.example/>1</a> &#z;\nc &#q\n<a href=https://b.example/>2</a>"
    )
    out, _, calls = run(html)
    assert clicks(calls) == ["https://a.example/", "https://b.example/"]
    assert (
        out
        == POT
        + html.replace("https://a.example/", made("click", "https://a.example/")).replace(
            "https://b.example/", made("click", "https://b.example/")
        )
        + PIX
    )


@pytest.mark.parametrize("unit", ["<a ", "<!--", "<a href='", "</", "&#z;", "<![ ", "<?", "<!x"])
def test_pathological_input_is_left_as_it_was(unit):
    """How fast is `python -m bench.timings`'s business; here: it ends, and changes nothing."""
    html = unit * (200_000 // len(unit))
    out, _, _ = run(html)
    assert out.replace(POT, "").replace(PIX, "") == html


HTMLISH = st.lists(
    st.sampled_from(
        [
            "<a href=",
            "<A HREF='",
            '"',
            "'",
            ">",
            "<",
            "/>",
            "</a>",
            " ",
            "\n",
            "=",
            "https://x.example/?a=1&amp;b=2",
            "http://y",
            "mailto:z",
            "#",
            "&",
            "&#",
            "&amp;",
            "&nbsp;",
            "##unsubscribetag##",
            "<body>",
            "</body>",
            "<BODY class=x>",
            "<!--",
            "-->",
            "<script>",
            "</script>",
            "<style>",
            "<!DOCTYPE html>",
            "<![CDATA[",
            "]]>",
            "<area href=",
            "https://r.example/c/t",
            "<p>",
            "text",
            "é",
        ]
    )
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), HTMLISH))
def test_never_raises_and_changes_nothing_it_does_not_rewrite(html):
    out, _, calls = run(html)
    kinds = [kind for kind, _ in calls]
    assert kinds.count("open") == 1 and kinds.count("honeypot") == 1
    if kinds == ["honeypot", "open"]:
        assert out.replace(POT, "", 1).replace(PIX, "", 1) == html


@settings(max_examples=300, deadline=None)
@given(HTMLISH)
def test_own_output_is_not_wrapped_again(html):
    out, _, _ = run(html)
    again, _, calls = run(out)
    assert [kind for kind, _ in calls if kind in ("click", "unsub")] == []


# The bulletproof button of buttons.cm (Campaign Monitor), as newsletter templates use it:
# VML for Outlook desktop inside a conditional comment, an <a> for every other client.
BULLETPROOF = """\
<div><!--[if mso]>
  <v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" xmlns:w="urn:schemas-microsoft-com:office:word" href="http://www.example.com/sale?utm_source=mso&amp;x=1" style="height:40px;v-text-anchor:middle;width:200px;" arcsize="10%" strokecolor="#1e3650" fill="t">
    <v:fill type="tile" src="https://i.imgur.com/0xPEf.gif" color="#556270" />
    <w:anchorlock/>
    <center style="color:#ffffff;font-family:sans-serif;font-size:13px;font-weight:bold;">Show me the button!</center>
  </v:roundrect>
<![endif]--><a href="http://www.example.com/sale?utm_source=mso&amp;x=1"
style="background-color:#556270;background-image:url(https://i.imgur.com/0xPEf.gif);border:1px solid #1e3650;border-radius:4px;color:#ffffff;display:inline-block;font-family:sans-serif;font-size:13px;font-weight:bold;line-height:40px;text-align:center;text-decoration:none;width:200px;-webkit-text-size-adjust:none;mso-hide:all;">Show me the button!</a></div>
<!--[if mso | IE]><v:rect href='https://example.com/rect' fillcolor="#fff"><v:textbox>R</v:textbox></v:rect><v:oval href=https://example.com/oval></v:oval><![endif]-->
<!-- not for Outlook: <v:roundrect href="https://example.com/plain-comment"> -->
"""


def test_vml_buttons_in_conditional_comments_are_wrapped_like_links():
    out, _, calls = run(BULLETPROOF)
    sale = "http://www.example.com/sale?utm_source=mso&x=1"
    assert clicks(calls) == [
        sale,
        sale,
        "https://example.com/rect",
        "https://example.com/oval",
    ]
    expected = (
        BULLETPROOF.replace(
            'href="http://www.example.com/sale?utm_source=mso&amp;x=1"',
            f'href="{made("click", sale)}"',
        )
        .replace(
            "href='https://example.com/rect'", f"href='{made('click', 'https://example.com/rect')}'"
        )
        .replace(
            "href=https://example.com/oval>", f"href={made('click', 'https://example.com/oval')}>"
        )
    )
    assert out == POT + expected + PIX
    # The comment syntax Outlook reads is intact, the other clients' markup too.
    assert out.count("<!--[if mso]>") == 1 and out.count("<![endif]-->") == 2
    assert out.count("<!--[if mso | IE]>") == 1
    assert 'src="https://i.imgur.com/0xPEf.gif"' in out  # a VML fill is not a link
    assert 'href="https://example.com/plain-comment"' in out  # an ordinary comment stays

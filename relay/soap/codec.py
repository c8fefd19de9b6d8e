"""SOAP 1.1 RPC/encoded envelopes of `handleRequest`: parse a call, build an answer or a Fault.

Parsing is lxml with a hardened parser: no DTD loaded, no entity resolved, no network, no
huge trees. A document with a DOCTYPE is refused outright (before and after parsing: the
XML bombs all need one), so entity expansion and external entities never happen. Answers
are built as element trees and serialised by lxml, never by joining strings, so every value
is escaped for XML whatever it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ENC = "http://schemas.xmlsoap.org/soap/encoding/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
APACHE = "http://xml.apache.org/xml-soap"
SERVICE_NS = "urn:relay-pull"  # the WSDL's namespace; a call in another one is answered in it
MAX_DEPTH = 8  # maps inside maps: the dialect needs three levels
PARAMS = ("contextId", "className", "processName", "entityData", "processData")

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    dtd_validation=False,
    remove_comments=True,
    remove_pis=True,
)
_NSMAP = {"SOAP-ENV": ENV, "SOAP-ENC": ENC, "xsd": XSD, "xsi": XSI, "ns2": APACHE}
_XSI_TYPE = f"{{{XSI}}}type"
_XSI_NIL = f"{{{XSI}}}nil"


class Fault(Exception):
    """The envelope itself is wrong: answered as a SOAP Fault (`Client` or `VersionMismatch`)."""

    def __init__(self, message: str, code: str = "Client") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Call:
    """One `handleRequest`: the five parameters, maps decoded to dicts (None when nil)."""

    namespace: str
    context_id: str | None = None
    class_name: str | None = None
    process_name: str | None = None
    entity_data: dict[str, Any] = field(default_factory=dict)
    process_data: dict[str, Any] = field(default_factory=dict)


def parse_call(body: bytes) -> Call:
    """The call in a SOAP 1.1 envelope; raises Fault for anything that is not one."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise Fault("DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise Fault(f"malformed XML: {exc.msg}"[:200]) from None
    if root.getroottree().docinfo.doctype:
        raise Fault("DTDs and entity declarations are not accepted")
    if root.tag == f"{{{SOAP12_ENV}}}Envelope":
        raise Fault(
            "SOAP 1.2 envelopes are not accepted: this service speaks SOAP 1.1", "VersionMismatch"
        )
    if root.tag != f"{{{ENV}}}Envelope":
        raise Fault("not a SOAP 1.1 Envelope", "VersionMismatch")
    body_el = root.find(f"{{{ENV}}}Body")
    operation = body_el[0] if body_el is not None and len(body_el) else None
    if operation is None or etree.QName(operation).localname != "handleRequest":
        raise Fault("the Body must hold one handleRequest call")
    params = {etree.QName(child).localname: child for child in operation}
    maps = {name: _value(params[name], 0) for name in PARAMS if name in params}
    for name in ("entityData", "processData"):
        if maps.get(name) is not None and not isinstance(maps[name], dict):
            raise Fault(f"{name} must be a map (ns2:Map) or nil")
    for name in ("contextId", "className", "processName"):
        if maps.get(name) is not None and not isinstance(maps[name], str):
            raise Fault(f"{name} must be a string")
    return Call(
        namespace=etree.QName(operation).namespace or SERVICE_NS,
        context_id=maps.get("contextId"),
        class_name=maps.get("className"),
        process_name=maps.get("processName"),
        entity_data=maps.get("entityData") or {},
        process_data=maps.get("processData") or {},
    )


def _value(el: etree._Element, depth: int) -> Any:
    """An encoded value: nil → None, a Map → dict, an array → list, else its text."""
    if depth > MAX_DEPTH:
        raise Fault(f"values nested deeper than {MAX_DEPTH} levels")
    if el.get(_XSI_NIL) in ("true", "1"):
        return None
    kind = (el.get(_XSI_TYPE) or "").rpartition(":")[2]
    if kind == "Map":
        return _map(el, depth)
    if len(el):
        if all(etree.QName(c).localname == "item" and len(c) == 0 for c in el) and kind != "Map":
            return [_value(c, depth + 1) for c in el]
        return _map(el, depth)
    return el.text or ""


def _map(el: etree._Element, depth: int) -> dict[str, Any]:
    """An Apache map: `item` children, each with a `key` and a `value`."""
    out: dict[str, Any] = {}
    for item in el:
        parts = {etree.QName(c).localname: c for c in item}
        if etree.QName(item).localname != "item" or "key" not in parts:
            raise Fault("a map holds item elements with a key and a value")
        key = _value(parts["key"], depth + 1)
        if not isinstance(key, str):
            raise Fault("a map's keys must be strings")
        out[key] = _value(parts["value"], depth + 1) if "value" in parts else None
    return out


def _encode(parent: etree._Element, tag: str, value: Any) -> None:
    """`value` as an encoded child: str/int/bool/None, dicts as ns2:Map, lists as arrays."""
    el = etree.SubElement(parent, tag)
    if value is None:
        el.set(_XSI_NIL, "true")
    elif isinstance(value, dict):
        el.set(_XSI_TYPE, "ns2:Map")
        for key, item_value in value.items():
            item = etree.SubElement(el, "item")
            _encode(item, "key", str(key))
            _encode(item, "value", item_value)
    elif isinstance(value, list):
        el.set(_XSI_TYPE, "SOAP-ENC:Array")
        el.set(f"{{{ENC}}}arrayType", f"xsd:anyType[{len(value)}]")
        for v in value:
            _encode(el, "item", v)
    elif isinstance(value, bool):
        el.set(_XSI_TYPE, "xsd:boolean")
        el.text = "true" if value else "false"
    elif isinstance(value, int):
        el.set(_XSI_TYPE, "xsd:int")
        el.text = str(value)
    else:
        el.set(_XSI_TYPE, "xsd:string")
        el.text = str(value)


def _envelope() -> tuple[etree._Element, etree._Element]:
    root = etree.Element(f"{{{ENV}}}Envelope", nsmap=_NSMAP)
    root.set(f"{{{ENV}}}encodingStyle", ENC)
    return root, etree.SubElement(root, f"{{{ENV}}}Body")


def build_response(namespace: str, answer: dict[str, Any]) -> bytes:
    """`handleRequestResponse` whose `return` is `answer` as an Apache map."""
    root, body = _envelope()
    response = etree.SubElement(
        body, f"{{{namespace}}}handleRequestResponse", nsmap={"ns1": namespace}
    )
    _encode(response, "return", answer)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def build_fault(fault: Fault) -> bytes:
    """A SOAP 1.1 Fault: `faultcode` SOAP-ENV:Client (or VersionMismatch) and the reason."""
    root, body = _envelope()
    el = etree.SubElement(body, f"{{{ENV}}}Fault")
    etree.SubElement(el, "faultcode").text = f"SOAP-ENV:{fault.code}"
    etree.SubElement(el, "faultstring").text = str(fault)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

"""The GS1 grammar done by biip: the one module that imports it, errors wrapped as ParseError."""

from __future__ import annotations

from biip import ParseError as BiipParseError
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString

from gateway.domain.barcodes import Gs1Element, Gs1Syntax
from gateway.errors import ParseError

__all__ = ["BIIP_GS1", "BiipGs1Syntax"]


class BiipGs1Syntax:
    """The domain's `Gs1Syntax` read by biip; biip's errors become ParseError with its reason."""

    def element_at(self, data: str) -> Gs1Element:
        """The element string at the start of `data`; raises ParseError when biip refuses it."""
        try:
            element = GS1ElementString.extract(data)
        except BiipParseError as exc:
            raise ParseError("barcode", str(exc)) from exc
        return _element(element)

    def digital_link(self, uri: str) -> tuple[Gs1Element, ...]:
        """The element strings of a Digital Link URI; raises ParseError when biip refuses it."""
        try:
            link = GS1DigitalLinkURI.parse(uri)
        except (BiipParseError, ValueError) as exc:  # urlsplit raises ValueError on a bad host
            raise ParseError("barcode", f"Digital Link: {exc}") from exc
        return tuple(_element(element) for element in link.element_strings)


BIIP_GS1: Gs1Syntax = BiipGs1Syntax()


def _element(element: GS1ElementString) -> Gs1Element:
    return Gs1Element(ai=element.ai.ai, value=element.value, date=element.date)

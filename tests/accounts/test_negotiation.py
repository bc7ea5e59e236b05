"""The negotiation shortcut answers exactly what DRF's own negotiation answers."""

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from accounts.api.negotiation import JsonFirstContentNegotiation


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
@pytest.mark.parametrize("query", ["", "?format=json"])
def test_shortcut_agrees_with_drf(accept, query):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/api/v1/balance{query}", **headers))
    renderers = [JSONRenderer()]
    ours = JsonFirstContentNegotiation().select_renderer(request, renderers)
    theirs = DefaultContentNegotiation().select_renderer(request, renderers)
    assert ours == theirs


def test_other_accepts_and_renderer_lists_go_through_drf():
    request = Request(APIRequestFactory().get("/api/docs/", HTTP_ACCEPT="text/html"))
    renderers = [BrowsableAPIRenderer(), JSONRenderer()]
    renderer, media_type = JsonFirstContentNegotiation().select_renderer(request, renderers)
    assert isinstance(renderer, BrowsableAPIRenderer) and media_type == "text/html"
    plain = Request(APIRequestFactory().get("/api/docs/"))
    renderer, _ = JsonFirstContentNegotiation().select_renderer(plain, renderers)
    assert isinstance(renderer, BrowsableAPIRenderer)  # first renderer is not JSON: DRF decides

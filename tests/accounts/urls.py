from django.urls import path

from config import urls as project_urls
from tests.accounts import testviews

urlpatterns = [
    path("api/test/transfer", testviews.TransferView.as_view()),
    path("api/test/raise/<str:name>", testviews.RaiseView.as_view()),
    path("api/test/idem-raise/<str:name>", testviews.IdempotentRaiseView.as_view()),
    path("api/test/plain-boom", testviews.plain_boom),
    *project_urls.urlpatterns,
]

handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.api.views import api_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/", include("lightning.urls")),
    path("api/v1/onchain/", include("onchain.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Every other /api/ path: a JSON 404 in our error shape (also with DEBUG on).
    re_path(r"^api/", api_not_found),
    path("", include("lightning.portal_urls")),
    path("", include("accounts.urls")),
]

handler400 = "accounts.api.errors.handler400"
handler403 = "accounts.api.errors.handler403"
handler404 = "accounts.api.errors.handler404"
handler500 = "accounts.api.errors.handler500"

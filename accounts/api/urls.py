from django.urls import path

from accounts.api import views

urlpatterns = [
    path("account", views.AccountView.as_view(), name="api-account"),
    path("balance", views.BalanceView.as_view(), name="api-balance"),
    path("transactions", views.TransactionsView.as_view(), name="api-transactions"),
]

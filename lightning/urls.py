from django.urls import path

from lightning import api

urlpatterns = [
    path("deposits", api.DepositsView.as_view(), name="api-deposits"),
    path("deposits/<str:payment_hash>", api.DepositDetailView.as_view(), name="api-deposit"),
    path("withdrawals", api.WithdrawalsView.as_view(), name="api-withdrawals"),
    path(
        "withdrawals/<int:withdrawal_id>", api.WithdrawalDetailView.as_view(), name="api-withdrawal"
    ),
]

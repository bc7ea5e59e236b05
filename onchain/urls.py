from django.urls import path

from onchain import api

urlpatterns = [
    path("withdrawals", api.WithdrawalsView.as_view(), name="api-onchain-withdrawals"),
    path(
        "withdrawals/<uuid:public_id>",
        api.WithdrawalView.as_view(),
        name="api-onchain-withdrawal",
    ),
    path("deposit-address", api.DepositAddressView.as_view(), name="api-onchain-deposit-address"),
    path("deposits", api.DepositsView.as_view(), name="api-onchain-deposits"),
]

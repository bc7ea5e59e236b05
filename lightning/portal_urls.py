from django.urls import path

from lightning import views

urlpatterns = [
    path("deposit/", views.deposit, name="deposit"),
    path("deposit/<str:payment_hash>/", views.deposit_detail, name="deposit-detail"),
    path("withdraw/", views.withdraw, name="withdraw"),
]

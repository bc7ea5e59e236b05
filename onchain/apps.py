from django.apps import AppConfig


class OnchainConfig(AppConfig):
    """On-chain withdrawals (queued, then sent in scheduled batch transactions) and on-chain
    deposits. Its own app so its migrations never collide with lightning/'s, which the node
    backends' branches change in parallel."""

    name = "onchain"
    verbose_name = "On-chain"

"""`manage.py issue_api_key USERNAME --scopes read,receive,send [--create-user] [--name N]`:
issue an API key. The key is printed alone on the last line of output (for scripts); it is
not logged anywhere."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiScope, User
from accounts.services import AccountsError, api_key_issue, user_create


class Command(BaseCommand):
    help = "Issue an API key for a user and print it on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--scopes",
            default=ApiScope.READ.value,
            help="comma-separated subset of read,receive,send (default: read)",
        )
        parser.add_argument("--name", default="cli", help="a name to tell the key apart")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="create the user (without a password) if it does not exist",
        )

    def handle(self, *args, username: str, scopes: str, name: str, create_user: bool, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise CommandError(f"No user named {username!r}. Pass --create-user to create it.")
            try:
                user = user_create(username=username)
            except AccountsError as error:
                raise CommandError(error.message) from error
            self.stderr.write(f"created user {username} ({user.uuid})")
        wanted = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        try:
            api_key, plaintext = api_key_issue(user=user, name=name, scopes=wanted)
        except AccountsError as error:
            raise CommandError(error.message) from error
        self.stderr.write(
            f"issued key {api_key.display_prefix} '{api_key.name}' for {username} "
            f"with scopes {','.join(api_key.scopes)}; it is shown once, below"
        )
        self.stdout.write(plaintext)

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import User


@admin.register(User)
class SatledgerUserAdmin(UserAdmin):
    list_display = ("username", "uuid", "email", "is_staff", "date_joined")
    readonly_fields = ("uuid",)
    search_fields = ("username", "email", "uuid")

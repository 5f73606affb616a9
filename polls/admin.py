from django.contrib import admin

from polls.models import Option, Poll


class OptionInline(admin.TabularInline):
    model = Option
    fields = ["position", "text", "votes"]
    readonly_fields = ["votes"]
    extra = 0


@admin.register(Poll)
class PollAdmin(admin.ModelAdmin):
    list_display = ["id", "question", "status", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["question"]
    inlines = [OptionInline]

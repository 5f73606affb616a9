"""Moderation in Django admin: staff only, with Django's permissions and an audit trail."""

from functools import partial

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from polls.api.exports import results_csv
from polls.domain.exceptions import InvalidPoll
from polls.domain.selectors import poll_get, poll_results_visible, poll_totals
from polls.domain.services import poll_options_clean, poll_question_clean, poll_set_hidden, poll_set_status
from polls.models import AuditEntry, Option, Poll, Vote

# The audit note of an export of counts that the poll still held back from the public.
HELD_BACK_NOTE = "Results not yet public (held back until the viewer votes or the poll closes)."


class OptionInlineFormSet(BaseInlineFormSet):
    """A poll's options as the API makes them: positions 1..N without a gap, and the
    rules of polls.domain.services.poll_options_clean (their number and text, max_choices).

    The vote path checks a ballot's option against the number of options only, so a gap
    (1, 2, 7) let a vote for option 3 be answered 204 and then refused by the worker.
    """

    def clean(self):
        super().clean()
        if any(form.errors for form in self.forms):
            return  # the fields' own errors first
        if self.instance.pk is not None and (self.instance.version > 0 or not self.has_changed()):
            return  # a poll with votes keeps its options as they are, and so does one whose options were not touched
        kept = []  # (position, form) of each option the poll keeps
        for form in self.forms:
            cleaned = getattr(form, "cleaned_data", None) or {}
            if cleaned.get("DELETE"):
                continue
            if form.instance.pk is not None:  # an existing option, perhaps shown read-only
                kept.append((cleaned.get("position", form.instance.position), form))
            elif cleaned:  # a new one that was filled in
                kept.append((cleaned["position"], form))
        kept.sort(key=lambda pair: pair[0])
        positions = [position for position, _ in kept]
        if positions != list(range(1, len(positions) + 1)):
            raise ValidationError(
                f"Options are numbered 1 to {len(positions)} without a gap; these are {', '.join(map(str, positions))}."
            )
        try:
            texts = poll_options_clean(
                options=[form.cleaned_data.get("text", form.instance.text) for _, form in kept],
                max_choices=self.instance.max_choices,
            )
        except InvalidPoll as refused:
            raise ValidationError(str(refused)) from None
        for (_, form), text in zip(kept, texts, strict=True):
            form.instance.text = text  # as the API stores it (the form built the instance already)


class PollAdminForm(forms.ModelForm):
    def clean_question(self):
        try:
            return poll_question_clean(question=self.cleaned_data["question"])
        except InvalidPoll as refused:
            raise ValidationError(str(refused)) from None


class OptionInline(admin.TabularInline):
    model = Option
    formset = OptionInlineFormSet
    fields = ["position", "text", "votes"]
    readonly_fields = ["votes"]
    extra = 0

    def get_readonly_fields(self, request, obj=None):
        # Renumbering options of a poll that has votes would move the votes with them.
        if obj is not None and obj.version > 0:
            return ["position", "text", "votes"]
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.version == 0


class AuditEntryInline(admin.TabularInline):
    model = AuditEntry
    fields = ["at", "action", "actor", "note"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Poll)
class PollAdmin(admin.ModelAdmin):
    form = PollAdminForm
    list_display = [
        "id",
        "question_isolated",
        "status",
        "hidden",
        "total_votes",
        "one_vote_per",
        "results_visibility",
        "created_at",
    ]
    list_filter = ["status", "hidden", "one_vote_per", "results_visibility", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["question", "options__text"]
    date_hierarchy = "created_at"
    # Status and visibility change only through the actions, which keep the audit trail.
    readonly_fields = ["status", "hidden", "version", "created_at", "created_by", "vote_history_link"]
    # The voting rules are set when a poll is made: edited later, nothing would validate,
    # audit or broadcast them (a deadline moved into the past closes the poll unseen, a
    # visibility changed under viewers shows them what it should not).
    rule_fields = ["closes_at", "results_visibility", "one_vote_per", "max_choices"]
    inlines = [OptionInline, AuditEntryInline]
    actions = ["close_polls", "reopen_polls", "hide_polls", "unhide_polls", "export_results_csv"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is None else [*self.readonly_fields, *self.rule_fields]

    def get_deleted_objects(self, objs, request):
        """What a deletion would take, without loading the vote rows of a poll that has them.

        Django's collector reads every related row to list it, a million vote rows for a
        busy poll, only to say they cannot be deleted (the vote history is read-only).
        A poll with applied batches (version > 0) has votes: refused at once, naming them.
        """
        if any(poll.version > 0 for poll in objs):
            return [], {}, {Vote._meta.verbose_name}, []
        return super().get_deleted_objects(objs, request)

    @admin.display(description="question", ordering="question")
    def question_isolated(self, poll):
        # Isolated: the question's bidi controls cannot reorder the row around it.
        return format_html("<bdi>{}</bdi>", poll.question)

    @admin.display(description="votes", ordering="total")
    def total_votes(self, poll):
        return poll.total

    @admin.display(description="vote history")
    def vote_history_link(self, poll):
        url = reverse("admin:polls_vote_changelist") + f"?poll__id__exact={poll.pk}"
        return format_html('<a href="{}">{} vote rows</a>', url, poll.votes.count())

    def _each(self, request, queryset, change, done: str):
        for poll in queryset:
            change(poll=poll, actor=request.user)
        self.message_user(request, f"{queryset.count()} poll(s) {done}.", messages.SUCCESS)

    @admin.action(description="Close selected polls", permissions=["change"])
    def close_polls(self, request, queryset):
        self._each(request, queryset, partial(poll_set_status, status=Poll.Status.CLOSED), "closed")

    @admin.action(description="Reopen selected polls", permissions=["change"])
    def reopen_polls(self, request, queryset):
        self._each(request, queryset, partial(poll_set_status, status=Poll.Status.OPEN), "reopened")

    @admin.action(description="Hide selected polls", permissions=["change"])
    def hide_polls(self, request, queryset):
        self._each(request, queryset, partial(poll_set_hidden, hidden=True), "hidden")

    @admin.action(description="Show selected polls again", permissions=["change"])
    def unhide_polls(self, request, queryset):
        self._each(request, queryset, partial(poll_set_hidden, hidden=False), "shown again")

    @admin.action(description="Export results of selected polls (CSV)", permissions=["view"])
    def export_results_csv(self, request, queryset):
        parts = []
        for poll in queryset.order_by("id"):
            poll = poll_get(poll_id=poll.pk, include_hidden=True)
            csv_text = results_csv(poll_totals(poll=poll))
            parts.append(csv_text if not parts else csv_text.split("\n", 1)[1])
            # Staff may read counts the public may not see yet: the trail says when they did.
            note = "" if poll_results_visible(poll=poll, voter=None) else HELD_BACK_NOTE
            AuditEntry.objects.create(poll=poll, action=AuditEntry.Action.EXPORT, actor=request.user, note=note)
        response = HttpResponse("".join(parts), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="poll-results-{stamp}.csv"'
        return response


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that are records, not data to edit: staff may look, nobody may change them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    """The vote history: read-only, since counters must always equal these rows."""

    list_display = ["vote_id", "poll", "option", "voter_key", "cast_at", "applied_at"]
    list_filter = [("cast_at", admin.DateFieldListFilter)]
    search_fields = ["=vote_id", "=ballot_id", "voter_key"]
    list_select_related = ["poll", "option"]
    show_full_result_count = False  # counting millions of rows on every page is slow


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "action", "poll", "actor", "note"]
    list_filter = ["action", ("at", admin.DateFieldListFilter)]
    search_fields = ["poll__question", "actor__username"]

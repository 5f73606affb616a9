from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from leaderboard.selectors import leaderboard_polls, leaderboard_top
from polling.strict import query_data, validated_data
from polls.api import docs
from polls.domain.selectors import poll_get


class LeaderboardApi(APIView):
    class FilterSerializer(serializers.Serializer):
        poll = serializers.IntegerField(
            min_value=1, max_value=2**63 - 1, required=False, help_text="Rank only this poll's options."
        )
        by = serializers.ChoiceField(
            choices=["options", "polls"], default="options", help_text="Rank options (default) or polls by total votes."
        )

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # The bounds come from settings, read when a request is validated.
            self.fields["limit"] = serializers.IntegerField(
                min_value=1,
                max_value=settings.LEADERBOARD_MAX_LIMIT,
                required=False,
                help_text=f"Entries to return: {settings.LEADERBOARD_DEFAULT_LIMIT} by default.",
            )

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: inline_serializer(
                "Leaderboard",
                {
                    "leaderboard": inline_serializer(
                        "LeaderboardEntry",
                        {
                            "option": serializers.CharField(required=False),
                            "count": serializers.IntegerField(required=False),
                            "poll_id": serializers.IntegerField(),
                            "position": serializers.IntegerField(required=False),
                            "question": serializers.CharField(),
                            "total": serializers.IntegerField(required=False),
                        },
                        many=True,
                    )
                },
            ),
            400: docs.VALIDATION_ERROR,
            404: docs.ErrorSerializer,
        },
        examples=[docs.LEADERBOARD_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = validated_data(self.FilterSerializer(data=query_data(request)))
        limit = filters.get("limit", settings.LEADERBOARD_DEFAULT_LIMIT)
        poll_id = filters.get("poll")
        if filters["by"] == "polls":
            return Response({"leaderboard": leaderboard_polls(limit=limit)})
        if poll_id is not None:
            poll_get(poll_id=poll_id)  # 404 for an unknown or hidden poll
        return Response({"leaderboard": leaderboard_top(limit=limit, poll_id=poll_id)})

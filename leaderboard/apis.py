from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from leaderboard.selectors import leaderboard_polls, leaderboard_top
from polls import docs
from polls.selectors import poll_get


class LeaderboardApi(APIView):
    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, required=False)
        poll = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
        by = serializers.ChoiceField(choices=["options", "polls"], default="options")

        def validate_limit(self, value: int) -> int:
            if value > settings.LEADERBOARD_MAX_LIMIT:
                raise serializers.ValidationError(f"Ensure this value is at most {settings.LEADERBOARD_MAX_LIMIT}.")
            return value

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="Entries to return: 10 by default, at most 100."),
            OpenApiParameter("poll", int, description="Rank only this poll's options."),
            OpenApiParameter("by", str, enum=["options", "polls"], description="Rank options (default) or polls by total votes."),
        ],
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
            400: docs.ErrorSerializer,
            404: docs.ErrorSerializer,
        },
        examples=[docs.LEADERBOARD_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        limit = filters.validated_data.get("limit", settings.LEADERBOARD_DEFAULT_LIMIT)
        poll_id = filters.validated_data.get("poll")
        if filters.validated_data["by"] == "polls":
            return Response({"leaderboard": leaderboard_polls(limit=limit)})
        if poll_id is not None:
            poll_get(poll_id=poll_id)  # 404 for an unknown or hidden poll
        return Response({"leaderboard": leaderboard_top(limit=limit, poll_id=poll_id)})

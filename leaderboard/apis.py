from django.conf import settings
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from leaderboard.selectors import leaderboard_top


class LeaderboardApi(APIView):
    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, required=False)

        def validate_limit(self, value: int) -> int:
            if value > settings.LEADERBOARD_MAX_LIMIT:
                raise serializers.ValidationError(f"Ensure this value is at most {settings.LEADERBOARD_MAX_LIMIT}.")
            return value

    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        limit = filters.validated_data.get("limit", settings.LEADERBOARD_DEFAULT_LIMIT)
        return Response({"leaderboard": leaderboard_top(limit=limit)})

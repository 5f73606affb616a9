from django.http import JsonResponse


def not_found(request, exception=None):
    """JSON, like the rest of the API: the client asked for a path that does not exist."""
    return JsonResponse({"detail": f"Not found: {request.path}"}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Internal server error."}, status=500)

"""Views of the generation app."""
from django.http import HttpResponse


def jobs(request):
    return HttpResponse("generation: coming soon")

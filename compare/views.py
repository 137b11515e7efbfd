"""Views of the compare app."""
from django.http import HttpResponse


def index(request):
    return HttpResponse("compare: coming soon")

"""Views of the annotate app."""
from django.http import HttpResponse


def label(request):
    return HttpResponse("annotate: coming soon")

"""Views of the training app."""
from django.http import HttpResponse


def runs(request):
    return HttpResponse("training: coming soon")

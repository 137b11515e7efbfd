"""The account page: a person's API tokens, made (shown once) and revoked by themselves."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from annotate.models import MAX_ID
from prefloop.lockout import password_confirms

from . import tokens
from .models import ApiToken


class AsksMakersPassword(forms.Form):
    """A form that makes a token asks the signed-in maker's password (this page's form and the admin's): a browser
    left signed in cannot make one alone. `request` is the request the form answers."""

    password = forms.CharField(
        label="Your password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Yours, the person making the token: a browser left signed in cannot make one alone.")
    request: HttpRequest | None = None

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not password_confirms(self.request, self.request.user, password):
            raise forms.ValidationError("That is not your password (wrong ones count towards the sign-in lockout).")
        return password


class TokenForm(AsksMakersPassword):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'labelling pipeline'.")
    field_order = ["name", "password"]

    def __init__(self, *args, request: HttpRequest, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request


class RevokeForm(forms.Form):
    token = forms.IntegerField(min_value=1, max_value=MAX_ID)


@never_cache  # the page shows a new token once: no browser or proxy cache may keep a copy
@sensitive_post_parameters("password")  # never in an error report
def account(request: HttpRequest) -> HttpResponse:
    """The person's tokens; POST makes a new one, whose value this response shows once."""
    form = TokenForm(request.POST or None, request=request)
    new_token = ""
    if request.method == "POST" and form.is_valid():
        try:
            _, new_token = tokens.create_token(request.user, form.cleaned_data["name"])
        except tokens.TokenError as exc:
            form.add_error("name", str(exc))
    status = 400 if request.method == "POST" and not new_token else 200
    rows = ApiToken.objects.filter(user=request.user)
    return render(request, "api/account.html", {"form": TokenForm(request=request) if new_token else form, "tokens": rows,
                                                "new_token": new_token}, status=status)


@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    form = RevokeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "No such token.")
        return redirect("api:account")
    row = get_object_or_404(ApiToken, pk=form.cleaned_data["token"], user=request.user)  # only one's own
    if not tokens.revoke_token(row):  # a second click, or another tab: it was refused from then, not now
        messages.info(request, f"Token {row.prefix}… had been revoked already.")
        return redirect("api:account")
    messages.success(request, f"Token {row.prefix}… revoked: it is refused from now on.")
    return redirect("api:account")

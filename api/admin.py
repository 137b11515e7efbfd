"""API tokens in the admin: list, revoke, and make one (shown once, on the page that answers the form: never in a
message, which Django's default storage keeps in a signed but readable cookie). A superuser makes and revokes
them for any person (a pipeline's account, a judge's); any other staff member given the token permissions, only
their own: a token for another account acts as that account, so it would let them label as an annotator (skewing
agreement and gold accuracy) or act with a superuser's rights.

Also the sign-in lockouts (django-axes' failed attempts), with axes' own "Clean up expired attempts" action mended."""
from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.models import AccessAttempt
from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from . import tokens
from .models import ApiToken
from .views import AsksMakersPassword


class ApiTokenForm(forms.ModelForm, AsksMakersPassword):  # `request`: set by ApiTokenAdmin.get_form
    class Meta:
        model = ApiToken
        fields = ["user", "name"]

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name or not name.isprintable():
            raise forms.ValidationError("expected printable characters, e.g. 'labelling pipeline'")
        return name


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["prefix", "name", "user", "created", "last_used", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "prefix", "user__username"]
    fields = ["user", "name", "prefix", "created", "last_used", "revoked"]
    readonly_fields = ["prefix", "created", "last_used", "revoked"]
    actions = ["revoke"]

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        return rows if request.user.is_superuser else rows.filter(user=request.user)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.request = request  # a class made for this request by modelform_factory, fields and all
        if obj is not None:
            form.base_fields.pop("password")  # a made token changes only by being revoked (an action)
        if obj is None and not request.user.is_superuser and "user" in form.base_fields:
            field = form.base_fields["user"]
            field.queryset = field.queryset.filter(pk=request.user.pk)
            field.initial = request.user.pk
        return form

    @method_decorator(sensitive_post_parameters("password"))  # never in an error report
    def add_view(self, request, form_url="", extra_context=None):
        return super().add_view(request, form_url, extra_context)

    def get_fields(self, request, obj=None):
        return self.fields if obj else ["user", "name", "password"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "user", "name"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # a token's name and owner are fixed; only revoking changes it
        row, token = tokens.create_token(obj.user, obj.name)
        obj.pk = row.pk
        obj.refresh_from_db()
        obj.new_token = token  # for response_add, which answers this same request

    def response_add(self, request, obj, post_url_continue=None):
        """The new token on the answer to the form itself, never stored: not in a message, not in any cache."""
        context = {**self.admin_site.each_context(request), "opts": self.opts, "token_row": obj,
                   "new_token": obj.new_token, "title": "New API token"}
        response = TemplateResponse(request, "admin/api/apitoken/made.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        revoked = sum(tokens.revoke_token(row) for row in queryset)
        already = queryset.count() - revoked  # counted as revoked too, it read as if they had been live until now
        messages.success(request, f"{revoked} token(s) revoked." + (f" {already} had been revoked already." if already
                                                                    else ""))


class AccessAttemptAdmin(AxesAccessAttemptAdmin):
    """django-axes' list of failed sign-ins (the lockouts), with its "Clean up expired attempts" action mended."""

    @admin.action(description="Clean up expired attempts", permissions=["delete"])  # it deletes records
    def cleanup_expired_attempts(self, request, queryset):
        # axes reckons "expired" from the time of the sign-in it is checking, which its sign-in code sets on the
        # request; the admin's request has none, and the action answered with a 500 (AttributeError). From the
        # admin, expired is the lockout window back from now.
        request.axes_attempt_time = timezone.now()
        return super().cleanup_expired_attempts(request, queryset)


# axes registers its admin when its app is loaded (AXES_ENABLE_ADMIN), before this one ("api" comes after "axes" in
# INSTALLED_APPS): replaced here by the mended one.
if admin.site.is_registered(AccessAttempt):
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, AccessAttemptAdmin)

"""End-user document pages (placeholder until the UI lands)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []

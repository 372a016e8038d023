"""Webhook views (placeholder until the webhook endpoint lands)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []

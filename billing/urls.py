from django.urls import path

from billing import views

urlpatterns = [
    path("", views.overview, name="billing_overview"),
    path("draft/", views.draft_month, name="billing_draft"),
    path("rate-cards/", views.add_rate_card, name="billing_rate_card_add"),
    path("storage-rates/", views.add_storage_rate, name="billing_storage_rate_add"),
    path("months/<str:month>.csv", views.month_csv, name="billing_month_csv"),
    path("teams/<slug:slug>/", views.team_page, name="billing_team"),
    path("invoices/<int:invoice_id>/", views.invoice_detail, name="billing_invoice"),
    path("invoices/<int:invoice_id>.csv", views.invoice_csv, name="billing_invoice_csv"),
    path("invoices/<int:invoice_id>.pdf", views.invoice_pdf, name="billing_invoice_pdf"),
    path("invoices/<int:invoice_id>/finalise/", views.finalise_invoice, name="billing_finalise"),
    path("notifications/read/", views.read_notifications, name="billing_notifications_read"),
]

"""Billing models (rate cards, usage, invoices, budgets) arrive with the billing capability."""

"""A database guard on PostgreSQL: finalised invoices and their lines cannot be updated or deleted.

The service layer, the admin and the API already refuse such changes; the trigger also stops a
stray SQL statement or a future code path. SQLite (the embedded default) relies on those checks.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION billing_refuse_finalised_invoice() RETURNS trigger AS $$
BEGIN
    IF OLD.state = 'finalised' THEN
        RAISE EXCEPTION 'invoice % is finalised and cannot be changed', OLD.id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION billing_refuse_finalised_line() RETURNS trigger AS $$
DECLARE
    parent_id bigint;
BEGIN
    parent_id := CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
    IF EXISTS (SELECT 1 FROM billing_invoice WHERE id = parent_id AND state = 'finalised')
       OR (TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM billing_invoice WHERE id = NEW.invoice_id AND state = 'finalised')) THEN
        RAISE EXCEPTION 'invoice % is finalised; its lines cannot be changed', parent_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoice_finalised_guard BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_finalised_invoice();
CREATE TRIGGER billing_invoiceline_finalised_guard BEFORE INSERT OR UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_refuse_finalised_line();
"""

DROP = """
DROP TRIGGER IF EXISTS billing_invoiceline_finalised_guard ON billing_invoiceline;
DROP TRIGGER IF EXISTS billing_invoice_finalised_guard ON billing_invoice;
DROP FUNCTION IF EXISTS billing_refuse_finalised_line();
DROP FUNCTION IF EXISTS billing_refuse_finalised_invoice();
"""


def create_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(create_guard, drop_guard)]

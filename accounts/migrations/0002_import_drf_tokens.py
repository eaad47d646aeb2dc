"""Carry the tokens of DRF's authtoken app (one never-expiring key per user, stored in plain text)
over to ApiToken, so that existing scripts keep working, then erase the plain keys.

The authtoken app is no longer installed; its table is read only if an older database has it.
"""

import hashlib
from datetime import UTC

from django.db import migrations
from django.utils import timezone

LEGACY_TABLE = "authtoken_token"


def import_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {LEGACY_TABLE}")
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        ApiToken(
            user_id=user_id,
            name="api-token (from before named tokens)",
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
            prefix=key[:8],
            created_at=created if timezone.is_aware(created) else created.replace(tzinfo=UTC),
        )
        for key, user_id, created in rows
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {LEGACY_TABLE}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(import_drf_tokens, migrations.RunPython.noop)]

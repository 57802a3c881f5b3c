from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('continuity', '0012_purge_node_cursors'),
    ]

    operations = [
        migrations.AddField(
            model_name='purgerun',
            name='node_stats',
            field=models.JSONField(blank=True, default=dict, help_text='Redis Cluster: {node host:port: {scanned, matched, done, skipped, commands, billed}}; summed into the run\'s totals.'),
        ),
        migrations.AddField(
            model_name='purgerun',
            name='node_layout',
            field=models.JSONField(blank=True, default=dict, help_text='Redis Cluster: {primary host:port: [[first slot, last slot], …]} when the run started; a change fails the run.'),
        ),
    ]

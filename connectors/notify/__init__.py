"""Reaching people outside the chat: one-time codes and signing links by email (SMTP) or SMS
(Aliyun, Tencent Cloud), behind one interface (`base.Sender`), chosen from the settings
(`registry.build_notifier`)."""

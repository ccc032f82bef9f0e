"""Schedules and sensors, all derived from the SLA table."""

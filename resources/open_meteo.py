"""Open-Meteo forecast client. One request at a time (Open-Meteo queues at most a few per IP: case C05)."""

from __future__ import annotations

from resources.http import ApiClient, ApiResponse

OPEN_METEO_BASE_URL = "https://api.open-meteo.com/v1"
HOURLY = ("temperature_2m", "relative_humidity_2m", "precipitation_probability", "precipitation", "wind_speed_10m")
DAILY = ("weather_code", "temperature_2m_max", "temperature_2m_min", "precipitation_sum")
CURRENT = ("temperature_2m", "apparent_temperature", "weather_code", "wind_speed_10m")


class OpenMeteoClient(ApiClient):
    api_name: str = "open_meteo"
    base_url: str = OPEN_METEO_BASE_URL
    forecast_days: int = 7

    def forecast(self, latitude: float, longitude: float) -> ApiResponse:
        # timezone=GMT asks for UTC times; the normalizer still applies utc_offset_seconds in case it is ignored.
        return self.get_json("forecast", {
            "latitude": latitude, "longitude": longitude, "timezone": "GMT", "forecast_days": self.forecast_days,
            "current": ",".join(CURRENT), "hourly": ",".join(HOURLY), "daily": ",".join(DAILY),
        })

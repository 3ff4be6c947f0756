// The landing page: translations only.
import { applyTranslations } from "./i18n.js";

applyTranslations();

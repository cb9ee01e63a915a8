/**
 * The app as the Functions worker loads it (package.json `main`, the bundle of this file): setup, every function's
 * registration, then the settings check.
 *
 * The order matters. The worker reports an exception thrown while the app loads as a failed function index, carrying
 * its message, only when the app registered a function before throwing; thrown before any `app.http(...)`, it
 * reports a successful load of zero functions, every route answers 404, and the message reaches only the worker's
 * stderr. So the check runs after the registrations: on Azure a bad setting (`CHAT_TRIM_POLICY=bogus`) shows as a
 * failed index naming the setting, and with good settings every function loads.
 * test/integration/startupErrors.test.ts loads the bundle through `@azure/functions-core` as the worker does.
 */
import './setup';
import './functions/createConversation';
import './functions/deleteConversation';
import './functions/getConversation';
import './functions/getTurn';
import './functions/health';
import './functions/listConversations';
import './functions/openapi';
import './functions/queueTurn';
import './functions/runTurnJob';
import './functions/pendingTurn';
import './functions/sendMessage';
import './functions/submitToolResults';
import './functions/streamMessage';
import './functions/streamToolResults';
import './functions/webhookGithub';
import './functions/webhookMessages';
import { validateStartupSettings } from './composition';

validateStartupSettings();
